# hookfleet — the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test chaos lint services browser build bench validate-deploy

## Start RabbitMQ and Redis (installing them when missing); no-op when they answer.
services:
	bash deploy/local/start.sh

## Chromium and chromedriver for the console's browser tests (installing them when
## missing); no-op when present.
browser:
	bash deploy/local/browser.sh

build:
	$(CARGO) build --workspace --bins

## The main job: services up, ingest + workers + mock AI (or a real provider when
## OPENAI_API_KEY / ANTHROPIC_API_KEY is set), a signed sample webhook, its AI result.
demo: services build
	bash deploy/local/demo.sh

## The whole test suite against the real RabbitMQ and Redis.
test: services browser lint validate-deploy
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

## The chaos tests (a few minutes with the cluster start; .ci/run runs them after
## `make test`): a local three-node RabbitMQ cluster (deploy/local/cluster.sh), queue
## leaders killed under load. The cluster is removed afterwards, whether the tests
## passed, failed or were interrupted.
chaos: services
	@trap 'bash deploy/local/cluster.sh down' EXIT; \
	bash deploy/local/cluster.sh up && \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run -p hookfleet-tests --test chaos --run-ignored only --no-capture; \
	else \
	  $(CARGO) test -p hookfleet-tests --test chaos -- --ignored --nocapture; \
	fi

## Offline checks of deploy/: Kubernetes schemas, kustomize builds, alerts, dashboard.
validate-deploy:
	bash deploy/validate.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks (not tests): writes BENCHMARKS.md.
bench: services
	bash bench/run.sh
