"""`python -m sigprop ...` (also what `torchrun -m sigprop train ...` runs)."""

from sigprop.cli import main

if __name__ == "__main__":
    main()
