"""A target whose import fails: it needs a package nobody has."""

import a_package_that_does_not_exist  # noqa: F401


def model():
    raise AssertionError("never reached")
