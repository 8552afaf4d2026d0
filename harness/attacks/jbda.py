"""Jacobian-based dataset augmentation (JBDA): being written."""
