"""``manage.py kojo_server``: the arbiter, its children, and what they run."""
