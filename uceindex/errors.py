"""Every error a user can act on. The CLI prints the message on one red line and exits
non-zero; the service maps `http_status` to the response. Anything else is a bug and keeps
its traceback."""


class UceIndexError(Exception):
    """Base of every error uceindex reports to a user; the message is one actionable line."""

    http_status = 400


class ModelFilesError(UceIndexError):
    """The model directory is missing a file, or its files do not fit together."""


class DownloadError(UceIndexError):
    """A model file could not be fetched or did not match its recorded checksum."""

    http_status = 502


class UnknownSpeciesError(UceIndexError):
    """The species is not in the model's vocabulary."""


class InputDataError(UceIndexError):
    """The input file or matrix cannot be used as it is (not counts, NaN, wrong genes...)."""


class OutputPathError(UceIndexError):
    """An output file cannot be written where it was asked for (name, folder, rights)."""


class StoreError(UceIndexError):
    """The store cannot take this operation (wrong model, missing table, bad state)."""


class StoreDamagedError(StoreError):
    """A table of the store cannot be read, or its rows disagree with what `datasets` recorded;
    `uceindex check --store S --repair` brings it back to its last consistent version."""

    http_status = 409


class StoreBusyError(StoreError):
    """Another process is ingesting the same data set into the store right now."""

    http_status = 409


class QueryError(UceIndexError):
    """A search, annotation or SQL request is malformed or not allowed."""


class DeviceMemoryError(UceIndexError):
    """The GPU (or other device) ran out of memory even for the smallest batch."""

    http_status = 503


class InsecureBindError(UceIndexError):
    """The service would answer beyond this machine with no token to guard it."""
