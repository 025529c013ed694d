# Two entry points: `make demo` and `make test`. Each sets up .venv on first use.
#
# torch comes first and pinned, so the CPU wheel on this kind of machine is used and
# pip never pulls a multi-gigabyte CUDA build here; on a machine with a GPU PyPI's wheel of the
# same version carries CUDA. Override with e.g. `make TORCH=torch==2.9.1 test`, or
# TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU build from PyTorch's own index.
PYTHON ?= python3
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || \
		$(VENV)/bin/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VENV)/bin/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/barfed demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -n auto --maxprocesses 4 --dist loadfile --durations 15

clean:
	rm -rf $(VENV) .barfed .pytest_cache
