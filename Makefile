# snn-robust: set-up, data and tests. The logic lives in scripts/.
#   make test                 set up .venv if needed, then run pytest (ARGS="-k data" to filter),
#                             then the SpikingJelly 0.0.0.0.14 adapter tests in .venv-sj014
#   make run                  set up, fetch MNIST, run the quick MNIST-FC recipe into runs/mnist-fc-quick
#   make data                 set up, fetch MNIST into $(DATA_ROOT)
# Everything they create stays in this checkout: .venv/, .venv-sj014/, data/, runs/.

DATA_ROOT ?= data
ARGS ?=
VENV_BIN := .venv/bin
# One torch thread: on this project's shared 2-core machine (load 8) an MNIST-FC training step
# took 0.20 s (natural) / 0.38 s (robust) with one thread, 3.6 s with two (README, "Two commands").
# Override with `make run OMP_NUM_THREADS=2`.
OMP_NUM_THREADS ?= 1

# snn-robust's commands read their default data root from this variable.
data run: export SNN_ROBUST_DATA := $(DATA_ROOT)
run: export OMP_NUM_THREADS := $(OMP_NUM_THREADS)

.PHONY: setup data run test

setup:
	bash scripts/setup.sh

data: setup
	$(VENV_BIN)/snn-robust data fetch mnist --data-root $(DATA_ROOT)

run: data
	@echo "make run: the quick MNIST-FC recipe on the CPU with $(OMP_NUM_THREADS) torch thread(s): 10.4 min recorded on a"
	@echo "2-core CPU shared with another job at load 1.5-2 (docs/results.md section 15d). The log names"
	@echo "each stage (k of 14), its wall time and the time left of a long stage; an interrupted run"
	@echo "resumes where it stopped when started again. Results: runs/mnist-fc-quick/results.md"
	$(VENV_BIN)/snn-robust recipe mnist-fc --profile quick

test:
	bash scripts/test.sh $(ARGS)
