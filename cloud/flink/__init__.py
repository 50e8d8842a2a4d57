"""The PyFlink job (:mod:`.job`) with its SQL (:mod:`.sql`) and plain-Python keyed logic (:mod:`.fleet`, :mod:`.levels`); running it locally or on a standalone cluster.
"""

__all__ = ["fleet", "job", "levels", "runner", "sql", "standalone"]
