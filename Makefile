# The three commands a newcomer needs: `make setup`, `make plan STACK=prod`, `make test`.
STACK ?= prod
VENV  ?= .venv
PY    := $(VENV)/bin/python
# Debian packages the tests use: the checkers of what we render (cloud-init schema, sshd -t,
# nft -c, visudo, wg-quick, shellcheck) and the lab hosts (systemd-nspawn over an overlay of /,
# so every package a lab host runs must be installed here; wireguard-go as there is no kernel module),
# the web edge's end-to-end lab (pebble as the ACME CA, dig, testssl.sh), backups (borg, borgmatic,
# rsync for the offsite copy, PostgreSQL for the dump hook) and monitoring (Prometheus with promtool, Alertmanager with amtool, blackbox_exporter).
APT_PACKAGES := cloud-init openssh-server openssh-client python3-venv shellcheck nftables sudo \
  wireguard-tools wireguard-go systemd-container iproute2 prometheus-node-exporter \
  unattended-upgrades systemd-timesyncd util-linux nginx bind9-utils \
  bind9 certbot openssl pebble dnsutils testssl.sh \
  borgbackup borgmatic rsync postgresql prometheus prometheus-alertmanager prometheus-blackbox-exporter \
  lynis mtail chromium postfix opendkim opendkim-tools postsrsd prometheus-postfix-exporter rspamd swaks

.PHONY: setup plan test test-program test-files test-lab fuzz bench docs lab drift layers

setup:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	  : "every lab host runs its own systemd, and the kernel's default 128 inotify instances run out"; \
	  [ "$$(sysctl -n fs.inotify.max_user_instances)" -ge 1024 ] || sysctl -qw fs.inotify.max_user_instances=1024; \
	else echo "not root or no apt: install these Debian packages yourself: $(APT_PACKAGES)"; fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt

# make itself can only exit 0 or 2, so the last line names ops.plan's own code (0 fine, 1 invalid
# config, 2 over capacity, 3 mandatory policy, 4 bug); scripts that branch on it run
# `$(PY) -m ops.plan --stack <stack>` directly, which exits with that code.
plan:
	@$(PY) -m ops.plan --stack $(STACK) $(ARGS); code=$$?; \
	  case $$code in 0) ;; 1) why="invalid config";; 2) why="over capacity";; 3) why="mandatory policy violated";; *) why="a bug";; esac; \
	  [ $$code -eq 0 ] || echo "make plan: ops.plan exited $$code ($$why)" >&2; \
	  exit $$code

# The tests keep Python's bytecode caches (__pycache__/, git-ignored) even where the environment turns
# them off (PYTHONDONTWRITEBYTECODE): without them every run, and every interpreter a test starts,
# compiles the project and the assertion-rewritten test modules again (~5 s of CPU per tier here).
test test-program test-files test-lab: export PYTHONDONTWRITEBYTECODE :=

test:
	$(PY) -m pytest -q

# One tier each (pytest.ini's markers; every test file is exactly one): the program under mocks, the
# rendered files under their daemons' checkers, the lab's hosts (root). The first two spread their
# tests over the cores (pytest-xdist; worksteal: a worker that runs dry takes tests from the other, as
# a few real-borg tests take seconds each); the lab's share subnets and a CA, so it runs one at a time.
test-program test-files: test-%:
	$(PY) -m pytest -q -m $* -n auto --dist worksteal

test-lab:
	$(PY) -m pytest -q -m lab

# The fuzz suite with its long profile (thousands of examples per property; `make test` runs the short one).
fuzz:
	HYPHA_FUZZ_PROFILE=fuzz HYPHA_INJECTION_ROUNDS=0 $(PY) -m pytest -q tests/test_fuzz.py tests/test_injection.py

bench:
	$(PY) bench/plan_scale.py
	$(PY) bench/converge.py
	$(PY) bench/drift_scale.py
	$(PY) bench/backup.py
	$(PY) bench/load_scale.py
	$(PY) bench/tiers.py

# Does every host still hold what the code renders? KEY: the deploy key (default $$HYPHA_DEPLOY_KEY_FILE).
drift:
	$(PY) -m ops drift --stack $(STACK) $(if $(KEY),--key $(KEY)) $(ARGS)

# Throw-away hosts on this machine, converged as staging; Ctrl-C tears them down.
lab:
	$(PY) -m lab up --stack $(or $(LAB_STACK),staging) $(ARGS)

# The layers (.importlinter) and the imports still hidden inside functions.
layers:
	$(VENV)/bin/lint-imports
	$(PY) tests/test_layers.py

docs:
	$(PY) -m ops.docs --write
