# The three commands a newcomer needs: `make setup`, `make plan STACK=prod`, `make test`.
STACK ?= prod
VENV  ?= .venv
PY    := $(VENV)/bin/python
# Debian packages the tests use: `cloud-init schema` and `sshd -t` check what we render.
APT_PACKAGES := cloud-init openssh-server python3-venv

.PHONY: setup plan test bench docs

setup:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	else echo "not root or no apt: install these Debian packages yourself: $(APT_PACKAGES)"; fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt

plan:
	$(PY) -m ops.plan --stack $(STACK) $(ARGS)

test:
	$(PY) -m pytest -q

bench:
	$(PY) bench/plan_scale.py

docs:
	$(PY) -m ops.docs --write
