class DataError(ValueError):
    """Bad input data. The message names the file and says what to do about it."""
