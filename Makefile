# Pieter CI — the two commands a newcomer needs are `make run` and `make test`; both install what is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR := $(CURDIR)/.run
# Jobs' workspaces for `make run`: jobs of a root server run as `nobody`, who may not reach this checkout
# (under /root, say), so they live in /var/tmp, one directory per checkout.
RUN_STATE := /var/tmp/pieter-ci-run-$(shell printf %s "$(CURDIR)" | md5sum | cut -c1-8)
# Debian packages used from the system (the venv sees them through --system-site-packages).
APT_PACKAGES := redis-server git httpie python3-venv python3-redis python3-systemd python3-uvloop \
	python3-httptools python3-websockets python3-aiofiles python3-multidict python3-ujson \
	python3-typing-extensions systemd-container
export PATH := /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$(PATH)

.PHONY: run test deps venv lint clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml | deps
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=23'
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: deps $(VENV)/.installed

# Serves the API on 127.0.0.1:8000; with no Redis configured, starts a private one under ./.run/.
run: venv
	@mkdir -p $(RUN_DIR) $(RUN_STATE)
	@if [ -z "$$PIETER_REDIS_URL$$PIETER_DB_HOST$$PIETER_DB_PORT" ]; then \
		redis-cli -s $(RUN_DIR)/redis.sock ping >/dev/null 2>&1 || \
		redis-server --port 0 --unixsocket $(RUN_DIR)/redis.sock --unixsocketperm 700 --dir $(RUN_DIR) \
			--appendonly yes --daemonize yes --pidfile $(RUN_DIR)/redis.pid --logfile $(RUN_DIR)/redis.log; \
		for i in $$(seq 50); do redis-cli -s $(RUN_DIR)/redis.sock ping >/dev/null 2>&1 && break; sleep 0.1; done; \
		export PIETER_REDIS_URL=unix://$(RUN_DIR)/redis.sock; \
	fi; \
	export PIETER_STATE_DIR=$${PIETER_STATE_DIR:-$(RUN_STATE)} PIETER_CONFIG=$${PIETER_CONFIG:-/nonexistent}; \
	exec $(VENV)/bin/pieter serve

lint: venv
	$(VENV)/bin/ruff check pieter tests
	$(VENV)/bin/ruff format --check pieter tests

test: venv
	$(VENV)/bin/ruff check pieter tests
	$(PY) -m pytest -ra $(PYTEST_ARGS)

clean:
	-[ -f $(RUN_DIR)/redis.pid ] && kill $$(cat $(RUN_DIR)/redis.pid)
	rm -rf $(VENV) $(RUN_DIR) $(RUN_STATE) build dist *.egg-info

