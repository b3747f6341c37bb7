"""Named exit codes shared by the arbiter and its children."""

OK = 0
# A child could not start (bad configuration, import error): the arbiter stops instead of respawning
# it in a loop.
BOOT_ERROR = 3
# The job process could not record its job's ending (database unreachable for too long).
RECORD_ERROR = 4
# The arbiter stopped because its configuration is invalid.
CONFIG_ERROR = 5
# The database answers but lacks kojo's tables or migrations: run ``manage.py migrate``.
NOT_MIGRATED = 6
