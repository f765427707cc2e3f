"""deeprec: course and video recommendations from the activity logs of online-learning platforms."""

__version__ = "0.1.0"
