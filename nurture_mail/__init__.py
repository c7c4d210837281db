"""nurture_mail: keep a recruiter's talent pool warm."""

__version__ = "0.1.0"
