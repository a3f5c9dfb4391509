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
# The library sources the targets exercise: all of berth but main.c, archived, so each target
# links only the objects it reaches (a parser's object may reach the store, ingest and more; a
# hand-kept list broke each time one of those grew a dependency).
FUZZ_SRC      = $(LIBSRC)
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
