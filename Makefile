# pg_clip: the README's commands. Everything runs as root on Debian 12; setup.sh installs
# what is missing and skips what is there.
SHELL := /bin/bash
ROOT := $(CURDIR)
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PG_BIN = $(shell $(PG_CONFIG) --bindir 2>/dev/null)
EXTDIR = $(shell $(PG_CONFIG) --sharedir 2>/dev/null)/extension
VERSION := $(shell grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
# the last released version: its install script (sql/pg_clip--$(RELEASED).sql) and every run-once
# schema file up to it are frozen (sql/released.sha256); the upgrade from it to $(VERSION) is
# assembled into .run/ by make install (sql/README.md)
RELEASED := 0.1.0
DB_USER ?= pgclip
ORT_LIB := $(ROOT)/.deps/onnxruntime/libonnxruntime.so.1.32.0
PG_REGRESS = $(shell $(PG_CONFIG) --pkglibdir 2>/dev/null)/pgxs/src/test/regress/pg_regress
REGRESS_TESTS := setup contents embed errors collections vocabulary identify projection learn security limits families
# example vocabularies, for clip.load_vocabulary_file('space', 'space.yaml'). PG_REGRESS and
# VOCAB_DIR are expanded when used (=, not :=): on a fresh machine pg_config exists only after setup
VOCAB_DIR = $(EXTDIR)/pg_clip/vocab
export PG_CLIP_ORT_LIB := $(ORT_LIB)
export PG_CLIP_ROOT := $(ROOT)
# small random-weight models in every real export layout, and their Python reference embeddings
export PG_CLIP_FIXTURES := $(ROOT)/.run/fixtures

.PHONY: setup install fixtures demo-images web run test test-web test-export test-unit test-pg test-lint test-regress test-upgrade test-client test-semantic demo-model bench fuzz clean

setup:
	@./scripts/setup.sh

install: setup
	@echo "==> cargo pgrx install --release"
	@mkdir -p .run && cargo pgrx schema pg15 --release --pg-config $(PG_CONFIG) -o .run/pg_clip--$(VERSION).sql >/dev/null
	@./scripts/upgrade-script.py .run/pg_clip--$(VERSION).sql $(RELEASED) $(VERSION) .run
	@cargo pgrx install --release --pg-config $(PG_CONFIG) >/dev/null
	@install -m 644 $(filter-out $(wildcard sql/pg_clip--*--*.sql),$(wildcard sql/pg_clip--*.sql)) \
	  .run/pg_clip--$(RELEASED)--$(VERSION).sql $(EXTDIR)/
	@install -d $(VOCAB_DIR) && install -m 644 vocab/*.yaml $(VOCAB_DIR)/

# Start the project's cluster; the demo model on generated images: descriptions, attribute
# columns, a classifier from labels, identification (examples/demo.sql)
# the generated images make run and make web show (the same seeds every time)
demo-images: setup
	@.venv/bin/python models/synth/generate.py --seed 7 --count 240 --out .run/demo/images >/dev/null
	@.venv/bin/python models/synth/generate.py --seed 8 --count 24 --kind frames --out .run/demo/frames >/dev/null
	@.venv/bin/python models/synth/generate.py --seed 0 --count 0 --kind cards --out .run/demo/cards >/dev/null

run: install demo-images
	@./scripts/cluster.sh start
	@eval "$$(./scripts/cluster.sh env)"; export PGDATABASE=pg_clip_demo; \
	  ./scripts/cluster.sh recreate-db $$PGDATABASE && \
	  psql -X -q -v ON_ERROR_STOP=1 -f examples/demo.sql; rc=$$?; \
	  ./scripts/cluster.sh stop; exit $$rc

test: setup test-unit test-pg test-lint test-regress test-upgrade test-client test-semantic test-web
	@echo "==> all test tiers passed"

# The model fixtures of every family (models/gen_fixtures.py) and the reference embeddings
# (tests/reference/families.py: onnxruntime, tokenizers, PIL), written afresh: a few seconds
fixtures: setup
	@echo "==> model fixtures of every family, and their Python reference"
	@.venv/bin/python models/gen_fixtures.py $(PG_CLIP_FIXTURES) >/dev/null
	@.venv/bin/python tests/reference/families.py $(PG_CLIP_FIXTURES) >/dev/null
	@.venv/bin/python models/synth/generate.py --seed 3 --count 24 --kind lookalikes --out .run/lookalikes >/dev/null

# pg_clip web on the project cluster: database pg_clip_web (made with examples/web.sql the first
# time; kept between runs, with its labels), http://127.0.0.1:8717/ until Ctrl-C.
# WEB_ARGS: more flags for pg_clip-web (see docs/web.md).
web: install demo-images
	@cargo build --release -q -p pg_clip_web
	@./scripts/cluster.sh start
	@eval "$$(./scripts/cluster.sh env)"; export PGDATABASE=pg_clip_web; \
	  if ! psql -X -d postgres -qAt -c "SELECT 1 FROM pg_database WHERE datname = 'pg_clip_web'" | grep -q 1; then \
	    createdb pg_clip_web && psql -X -q -v ON_ERROR_STOP=1 -f examples/web.sql || exit 1; fi; \
	  ./target/release/pg_clip-web $(WEB_ARGS); rc=$$?; ./scripts/cluster.sh stop; exit $$rc

# tier 1: the core, without a server (includes the golden comparisons)
test-unit: fixtures
	@echo "==> tier 1: core unit and reference tests"
	cargo test --release -p pg_clip_core
	.venv/bin/python tests/fetch/test_fetch.py $(PG_CLIP_FIXTURES)

# tier 2: #[pg_test]s inside a throwaway server run by $(DB_USER)
test-pg:
	@echo "==> tier 2: cargo pgrx test"
	@mkdir -p .run/pgrx-test && chown $(DB_USER) .run .run/pgrx-test
	cargo pgrx test --release pg15 --runas $(DB_USER) --pgdata $(ROOT)/.run/pgrx-test

# pgspot over the installed install and upgrade scripts. Ignored, because every function's
# search_path is pinned when the extension is created or updated (sql/grants.sql; the contents
# golden shows each function's), which pgspot cannot see: unqualified operators, functions and
# objects (PS001, PS016, PS017), functions without an explicit search_path (PS005) and CASE
# expressions (PS009); temporary tables created IF NOT EXISTS (PS012): they are the calling
# role's own, for code that runs with its rights; CREATE OR REPLACE of functions and views
# (PS002, PS015): the upgrade scripts need it, and PostgreSQL refuses to replace an object that
# is not the extension's own ("An extension is not allowed to replace an object that it does not
# own"), so no object planted in schema clip is taken over. SECURITY DEFINER functions carry
# their path inline (PS003).
test-lint: install
	@echo "==> cargo fmt --check, cargo clippy -D warnings (workspace lints in Cargo.toml)"
	cargo fmt --all --check
	cd fuzz && cargo fmt --check
	cargo clippy --workspace --all-targets --release --features "pg15 pg_test" -- -D warnings
	@echo "==> released scripts unchanged (sql/released.sha256)"
	@sha256sum --quiet -c sql/released.sha256
	@echo "==> pgspot over the extension script"
	@.deps/lint/bin/pgspot --ignore PS001 --ignore PS016 --ignore PS017 --ignore PS005 --ignore PS009 --ignore PS012 \
	  --ignore PS002 --ignore PS015 \
	  $(EXTDIR)/pg_clip--$(VERSION).sql $(EXTDIR)/pg_clip--$(RELEASED)--$(VERSION).sql

# tier 3: golden SQL files with pg_regress against the installed extension
test-regress: install fixtures
	@echo "==> tier 3: pg_regress $(REGRESS_TESTS)"
	@./scripts/cluster.sh start
	@eval "$$(./scripts/cluster.sh env)"; mkdir -p .run/regress; \
	  log_start=$$(wc -l < .run/postgres.log); \
	  ./scripts/cluster.sh recreate-db pg_clip_regress && \
	  $(PG_REGRESS) --use-existing --host=$$PGHOST --port=$$PGPORT --user=$$PGUSER --dbname=pg_clip_regress \
	    --inputdir=tests/pg_regress --outputdir=.run/regress --bindir=$(PG_BIN) $(REGRESS_TESTS) \
	  || { cat .run/regress/regression.diffs; ./scripts/cluster.sh stop; exit 1; }; \
	  if tail -n +$$((log_start + 1)) .run/postgres.log | grep -E "terminated by signal|was terminated by exception"; then \
	    echo "a backend ended by a signal during the golden tests (server log above)"; ./scripts/cluster.sh stop; exit 1; fi
	@./scripts/cluster.sh stop

# tier 3b: ALTER EXTENSION UPDATE from the last release against a fresh install, and a used
# database through the upgrade and through pg_dump / pg_restore (tests/upgrade/run.sh)
test-upgrade: install
	@echo "==> tier 3b: upgrade from $(RELEASED), dump and restore"
	@./scripts/cluster.sh start
	@./tests/upgrade/run.sh $(RELEASED) $(VERSION) $(PG_REGRESS) $(PG_BIN); rc=$$?; ./scripts/cluster.sh stop; exit $$rc

# tier 4: a client application (Rust postgres + pgvector crates) against the installed extension
test-client: install
	@echo "==> tier 4: client integration tests"
	@./scripts/cluster.sh start
	@eval "$$(./scripts/cluster.sh env)"; export PGDATABASE=pg_clip_client; \
	  ./scripts/cluster.sh recreate-db $$PGDATABASE && \
	  cargo test --release -p pg_clip_client_tests -- --test-threads=1; rc=$$?; \
	  ./scripts/cluster.sh stop; exit $$rc

# tier 6: pg_clip web: handler tests, then Debian's Chromium driven by playwright-core through
# the pages (web/tests/run.sh)
test-web: install demo-images
	@echo "==> tier 6: pg_clip web (handlers, then the pages in Chromium)"
	@cargo build --release -q -p pg_clip_web
	@./scripts/cluster.sh start
	@./web/tests/run.sh; rc=$$?; ./scripts/cluster.sh stop; exit $$rc

# tier 5: the workflows give the right answers with the trained demo model on held-out
# generated images, and every test fails with the random-weight model
# (tests/semantic/run.py)
test-semantic: install
	@echo "==> tier 5: semantic checks, demo model (must meet) and random-weight model (must miss)"
	@./scripts/cluster.sh start
	@eval "$$(./scripts/cluster.sh env)"; export PGDATABASE=pg_clip_semantic; \
	  ./scripts/cluster.sh recreate-db $$PGDATABASE && \
	  .venv/bin/python tests/semantic/run.py .run/semantic --model demo-clip --expect pass && \
	  ./scripts/cluster.sh recreate-db $$PGDATABASE && \
	  .venv/bin/python tests/semantic/run.py .run/semantic --model tiny-clip --expect fail; rc=$$?; \
	  ./scripts/cluster.sh stop; exit $$rc

# Not in make test: train models/demo-clip again (models/synth/train.py; torch in the export venv,
# tests/export/requirements.txt), seeded, about 40 minutes on 2 cores; see docs/demo-model.md
demo-model: setup
	@./tests/export/venv.sh
	.deps/export-venv/bin/python models/synth/train.py --out models/demo-clip

# Not in make test (torch's venv is about 6 GB): models/export_open_clip.py on randomly
# initialised open_clip models, their vectors through pg_clip against open_clip's own
test-export: setup
	@./tests/export/run.sh

# Throughput: session alone vs clip.embed_images vs the Python reference pipeline.
bench: install
	@./bench/run.sh

# Not in make test: cargo-fuzz (libFuzzer with AddressSanitizer) on the core's parsers, each target
# FUZZ_SECONDS long, from the test images and example vocabularies. The machine's toolchain is
# stable, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags. A crash input is copied
# into fuzz/regressions/<target>/, which core/tests/fuzz_regressions.rs replays in make test.
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := preprocess vocabulary rule filename
fuzz: setup
	@[ "$$(cargo fuzz --version 2>/dev/null)" = "cargo-fuzz 0.13.2" ] || cargo install cargo-fuzz --version 0.13.2 --locked
	@mkdir -p $(addprefix fuzz/corpus/,$(FUZZ_TARGETS))
	@find tests/images/edge -size -64k -type f -exec cp {} fuzz/corpus/preprocess/ \;
	@cp vocab/*.yaml fuzz/corpus/vocabulary/
	@printf 'a AND (b OR NOT c)' > fuzz/corpus/rule/seed; printf 'LOB-EN001_blue-eyes_white_dragon_ur.jpg' > fuzz/corpus/filename/seed
	@cd fuzz && fail=0; for t in $(FUZZ_TARGETS); do \
	  echo "==> fuzz $$t for $(FUZZ_SECONDS) s"; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run -O $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 \
	    -max_len=65536 -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|==[0-9]+==ERROR)" || true; \
	  for f in artifacts/$$t/crash-* artifacts/$$t/oom-* artifacts/$$t/timeout-*; do \
	    [ -f "$$f" ] && { cp "$$f" regressions/$$t/; echo "found: $$f (copied to fuzz/regressions/$$t)"; fail=1; }; done; \
	done; exit $$fail

clean:
	-./scripts/cluster.sh stop
	rm -rf .run target
