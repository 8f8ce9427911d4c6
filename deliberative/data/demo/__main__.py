"""`python -m deliberative.data.demo OUT_DIR [--seed 0]`: the generator's command line, which ran as
`__main__` of the old single-file data/demo.py and now needs this file since demo is a package."""

from deliberative.data.demo import main

main()
