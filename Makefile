# Two commands for a fresh machine:
#   make example   run the example project (SQLite, same-host locks; no services needed)
#   make test      run the whole test suite (PostgreSQL + Redis, then SQLite; Django 5.2 and 6.x)
export PYENV_VERSION ?= 3.11.7:3.12.1:3.13.0
PYTHON ?= python3
VENV := .venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,dev,tasks]'
	touch $@

.PHONY: example test lint
example: $(VENV)/.installed
	cd example_project && ../$(VENV)/bin/python manage.py migrate --verbosity 0 && ../$(VENV)/bin/python manage.py serve_demo

# tox's own interpreter discovery misses pyenv's shims; hand it the real interpreters (one --discover
# takes them all: given twice, the last one wins).
DISCOVER = $(foreach py,python3.11 python3.12 python3.13,$(shell $(py) -c 'import sys; print(sys.executable)' 2>/dev/null))

test: $(VENV)/.installed
	$(VENV)/bin/tox run --discover $(DISCOVER)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
