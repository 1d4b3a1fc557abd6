# Everything a fresh machine needs: `make run` and `make test` create the
# virtual environment and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GENERATED ?= generated
PROTOS := $(shell find protos/tmf629 -name '*.proto')
SITE = $(shell $(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: venv run test generate lint breaking bench bench-tools clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/customer-management serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Rebuilds generated/ with the pinned grpcio-tools and mypy-protobuf.
generate: $(STAMP)
	mkdir -p $(GENERATED)
	$(BIN)/python -m grpc_tools.protoc -Iprotos -I$(SITE) \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--python_out=$(GENERATED) --grpc_python_out=$(GENERATED) \
		--mypy_out=$(GENERATED) --mypy_grpc_out=$(GENERATED) $(PROTOS)

lint: $(STAMP)
	npx --yes @bufbuild/buf@1.47.2 lint
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src benchmarks

# v1 stays compatible: no breaking change to the protos against a git ref (buf's FILE
# rules), by default the commit before this one: `make breaking AGAINST=<last release>`.
AGAINST ?= HEAD~1
breaking:
	npx --yes @bufbuild/buf@1.47.2 breaking --against '.git#ref=$(AGAINST)'

# The load tools come from Debian packages: h2load (nghttp2-client) drives uniform
# unary calls, libnghttp2's headers build benchmarks/grpcload.c.
bench: $(STAMP) bench-tools
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-tools:
	@if ! command -v h2load >/dev/null || [ ! -e /usr/include/nghttp2/nghttp2.h ]; then \
		echo "installing nghttp2-client and libnghttp2-dev …"; \
		apt-get update -qq && apt-get install -y -qq nghttp2-client libnghttp2-dev; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
