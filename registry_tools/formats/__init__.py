"""Output formats of pull and prefetch (a module of its own so the CLI can name them cheaply)."""

FORMATS = ("docker-archive", "oci-archive", "oci")
