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
	python3-typing-extensions python3-hiredis python3-dbus-next dbus systemd-container openssh-server \
	python3-prometheus-client chromium chromium-driver python3-selenium
export PATH := /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$(PATH)

.PHONY: run test deps venv lint typecheck clean

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

# The files and settings are in pyproject.toml's [tool.mypy].
typecheck: venv
	$(VENV)/bin/mypy

test: venv typecheck
	$(VENV)/bin/ruff check pieter tests
	$(PY) -m pytest -ra $(PYTEST_ARGS)

# Benchmarks (bench/, not part of `make test` or CI): about 6 minutes (10 at most), writes bench/RESULTS.md.
# `make bench BENCH_ARGS=--quick` (or `--only api,history`) is a partial run: it prints, it does not write.
.PHONY: bench
bench: venv
	@dpkg-query -W -f='$${Status}\n' wrk 2>/dev/null | grep -q 'ok installed' || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; }
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	-[ -f $(RUN_DIR)/redis.pid ] && kill $$(cat $(RUN_DIR)/redis.pid)
	rm -rf $(VENV) $(RUN_DIR) $(RUN_STATE) build dist *.egg-info

# Debian package (packaging/debian/): `make deb` builds dist/pieter-ci_<version>_all.deb from the files git knows
# (committed or not, ignored ones left out) and runs lintian; `make apt-repo` makes dist/apt/, a flat apt repository
# (`deb [trusted=yes] file:$(CURDIR)/dist/apt ./`). Build dependencies come from debian/control (apt-get build-dep).
.PHONY: deb apt-repo
APT_PACKAGES += python3-pip dpkg-dev apt-utils lintian debootstrap
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' pieter/__init__.py)
DEB := dist/pieter-ci_$(VERSION)_all.deb
DEB_STAGE := build/deb/pieter-ci-$(VERSION)
DEB_SOURCES := $(wildcard $(filter-out tests/% bench/% .ci/%,$(shell git ls-files -co --exclude-standard 2>/dev/null)))
CLEAN_ENV := env -u PYTHONPATH -u VIRTUAL_ENV -u PYTHONHOME PATH=/usr/sbin:/usr/bin:/sbin:/bin

deb: $(DEB)

build/wheels/.done: packaging/debian/vendor-requirements.txt | deps
	rm -rf build/wheels
	$(CLEAN_ENV) python3 -m pip download -q --no-deps --only-binary=:all: --require-hashes -d build/wheels -r $<
	touch $@

$(DEB): $(DEB_SOURCES) build/wheels/.done | deps
	@test -n "$(DEB_SOURCES)" || { echo "make deb: needs a git checkout"; exit 1; }
	rm -rf build/deb && mkdir -p $(DEB_STAGE) dist
	tar -cf - $(DEB_SOURCES) | tar -xf - -C $(DEB_STAGE)
	cp -r packaging/debian $(DEB_STAGE)/debian
	cp -r build/wheels $(DEB_STAGE)/debian/wheels
	cd $(DEB_STAGE) && $(CLEAN_ENV) dpkg-checkbuilddeps 2>/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q --no-install-recommends ./; }
	cd $(DEB_STAGE) && $(CLEAN_ENV) dpkg-buildpackage -b -us -uc > ../build.log 2>&1 \
		|| { tail -40 ../build.log; exit 1; }
	test "$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)" = "$(VERSION)" \
		|| { echo "packaging/debian/changelog: its version is not $(VERSION) (pieter/__init__.py)"; exit 1; }
	mv build/deb/pieter-ci_$(VERSION)_all.deb $@
	lintian --fail-on error $@

apt-repo: dist/apt/Release

dist/apt/Release: $(DEB) | deps
	rm -rf dist/apt && mkdir -p dist/apt
	cp $(DEB) dist/apt/
	cd dist/apt && dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null && gzip -9nk Packages
	cd dist/apt && apt-ftparchive -o APT::FTPArchive::Release::Origin=pieter-ci \
		-o APT::FTPArchive::Release::Label=pieter-ci release . > ../Release.tmp && mv ../Release.tmp Release
