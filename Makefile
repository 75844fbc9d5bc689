# Berth's entry points. Each target is a script under scripts/ (see scripts/README.md),
# so the same steps run from make, from CI (.ci/run) and by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help up down test bench fmt lint sqlx-prepare clean-var

help:
	@echo 'make up            start PostgreSQL, NATS and the gateway under ./var; prints how to push'
	@echo 'make down          stop what make up started'
	@echo 'make test          install what is missing, then fmt, clippy, sqlx check and all tests'
	@echo 'make bench         run the benchmark harness (scripts/bench.sh)'
	@echo 'make fmt           format the workspace'
	@echo 'make lint          rustfmt check and clippy (offline sqlx data)'
	@echo 'make sqlx-prepare  regenerate .sqlx/ (the offline query data) after changing a query'
	@echo 'make clean-var     stop everything under ./var and delete ./var'

up:
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

test:
	@bash scripts/test.sh

bench:
	@bash scripts/bench.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	SQLX_OFFLINE=true cargo clippy --workspace --all-targets -- -D warnings

sqlx-prepare:
	@bash scripts/sqlx-prepare.sh

clean-var:
	@bash scripts/clean-var.sh
