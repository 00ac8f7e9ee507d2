# `make demo` and `make test` each set up .venv idempotently, then run.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
# keycld appends --xla_cpu_experimental_ynn_fusion_type= to XLA_FLAGS itself (keycld/_xla.py).

.PHONY: demo test setup clean-venv

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/system_deps.sh
	scripts/system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[rl,test]"
	# gymnax (optional, for keycld_gym.gymnax) pins gymnasium<1.4 and imports six and seaborn undeclared
	$(PY) -m pip install -q --no-deps gymnax==1.0.1 six && $(PY) -m pip install -q seaborn
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/keycld demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q --durations=15 tests

clean-venv:
	rm -rf $(VENV)
