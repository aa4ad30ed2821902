# snn-robust: set-up, data and tests. The logic lives in scripts/.
#   make test                 set up .venv if needed, then run pytest (ARGS="-k data" to filter)
#   make run                  set up, fetch MNIST, run the quick MNIST recipe
#   make data                 set up, fetch MNIST into $(DATA_ROOT)

DATA_ROOT ?= data
ARGS ?=
VENV_BIN := .venv/bin

# snn-robust's commands read their default data root from this variable.
data run: export SNN_ROBUST_DATA := $(DATA_ROOT)

.PHONY: setup data run test

setup:
	bash scripts/setup.sh

data: setup
	$(VENV_BIN)/snn-robust data fetch mnist --data-root $(DATA_ROOT)

run: data
	$(VENV_BIN)/snn-robust recipe mnist-fc --profile quick

test:
	bash scripts/test.sh $(ARGS)
