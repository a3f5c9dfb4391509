# libFuzzer targets for berth's input parsers (issue 6), included by the top-level Makefile.
#
#   make fuzz-build                 builds build/fuzz/fuzz_<target> (clang, ASan + UBSan + libFuzzer)
#   make fuzz [FUZZ_SECONDS=300]    runs each target for FUZZ_SECONDS; the growing corpus lives in
#                                   build/fuzz/corpus/<target>/ (seeds: tests/fuzz/corpus/<target>/),
#                                   crashes in build/fuzz/artifacts/<target>/
#   make fuzz-<target>              one target only (ref digest range manifest config challenge
#                                   chartyaml chart_tgz compose_tgz semver token margo bundle)
#   make -k fuzz                    go on with the other targets after a crash
#
# tests/integration/fuzz.sh (part of `make test`) runs every target for a few seconds.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 300
# One target per tests/fuzz/fuzz_<target>.c, seeded from tests/fuzz/corpus/<target>/ (and
# tests/fuzz/dict/<target>.dict when present).
FUZZ_TARGETS  = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
# The library sources the targets exercise (archived, so each target links only what it needs).
# src/helm/chart.c (chart_tgz) also holds helm_chart_store and helm_oci_entry,
# so its object needs the index renderer and the store (sqlite metadata, blob files) to link.
FUZZ_SRC      = src/util/ref.c src/util/digest.c src/util/err.c src/util/log.c src/config.c \
                src/registry/httpparse.c src/registry/manifest.c src/proxy/upstream.c \
                src/helm/chart.c src/helm/index.c src/store/store.c src/store/evict.c \
                src/store/blobfs.c src/store/meta_sql.c src/store/meta_sqlite.c src/store/meta_pg.c \
                src/auth/token.c \
                src/util/tar.c \
                src/margo/margo.c src/bundle/layout.c src/util/file.c src/util/curlx.c src/util/tlslazy.c \
                src/util/mlazy.c src/util/semver.c src/util/strbuf.c src/util/yamlj.c src/util/metrics.c \
                src/store/s3.c src/store/s3mode.c src/store/fault.c
FUZZ_SAN      = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# The Makefile's CFLAGS (-std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc + pkg-config), under
# clang, which does not know every gcc warning name the Makefile turns off and warns about the
# multi-line SQL literals of src/store/meta_sqlite.c (-Wstring-concatenation, which gcc lacks).
FUZZ_CFLAGS   = $(CFLAGS) -O1 -g -Wno-unknown-warning-option -Wno-string-concatenation $(FUZZ_SAN)
FUZZ_OBJ      = $(FUZZ_SRC:src/%.c=build/fuzz/obj/%.o)
FUZZ_BINS     = $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)

.PHONY: fuzz fuzz-build $(FUZZ_TARGETS:%=fuzz-%)
fuzz-build: $(FUZZ_BINS)

build/fuzz/obj/%.o: src/%.c $(wildcard src/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/libberth.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h build/fuzz/libberth.a $(wildcard src/*.h src/*/*.h)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ $< build/fuzz/libberth.a $(LDLIBS)

fuzz: $(FUZZ_TARGETS:%=fuzz-%)

$(FUZZ_TARGETS:%=fuzz-%): fuzz-%: build/fuzz/fuzz_%
	@mkdir -p build/fuzz/corpus/$* build/fuzz/artifacts/$*
	build/fuzz/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/$*/ \
	    $(if $(wildcard tests/fuzz/dict/$*.dict),-dict=tests/fuzz/dict/$*.dict) \
	    build/fuzz/corpus/$* tests/fuzz/corpus/$*
