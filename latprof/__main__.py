"""`python -m latprof`: the same command line as `latprof`."""

from latprof.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="latprof")
