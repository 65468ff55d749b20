"""User-facing `medgen` sub-commands that are not part of a larger subsystem (see `medgen.cli`)."""
