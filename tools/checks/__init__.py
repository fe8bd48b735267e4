"""Checks of the templates without AWS: the launch and role rules (templates), what each role may
do condition by condition (grants), and every call a function made against its role
(permissions)."""
