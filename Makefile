# berth build. `make` builds build/berth; see README.md for run/test/bench.
CC      ?= cc
PKG_CONFIG ?= pkg-config
PKGS     = libmicrohttpd jansson sqlite3 nettle yaml-0.1 gnutls expat
CFLAGS  ?= -O2 -g
# the machine the binary is for (a cross compiler names its target), not the one building it
TARGET  := $(shell $(CC) -dumpmachine)
# Every flag comes from pkg-config: a missing package stops the build here, by name, instead of
# silently dropping everyone's flags. libcurl, libarchive and libpq are only dlopen'ed, so their
# headers are all berth needs (libpq's include directory is asked for alone: its -dev package
# cannot be installed for two architectures at once, and the host's header serves).
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) libcurl libarchive 2>/dev/null || echo PKGFAIL)
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null || echo PKGFAIL)
PQ_INCLUDE := $(shell $(PKG_CONFIG) --variable=includedir libpq 2>/dev/null || pg_config --includedir 2>/dev/null)
# Paths are built with snprintf into PATH_MAX buffers; truncation there is not a bug class we hit.
# libcurl and libarchive: headers only; they are loaded with dlopen when first needed (a mirror,
# a chart upload: src/proxy/upstream.c, src/helm/chart.c), so a plain registry does not map them
# libpq likewise (src/store/meta_pg.c, only when database.enabled)
# 64-bit file offsets everywhere (a 32-bit target otherwise cannot list or hold a blob over 2 GiB)
CFLAGS  += -std=c17 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Wall -Wextra -Werror -Wno-format-truncation \
	   -Isrc $(PKG_CFLAGS) $(if $(PQ_INCLUDE),-I$(PQ_INCLUDE))
# The libraries are linked statically where Debian ships an archive (only the code berth touches
# is then mapped, and no symbol lookups at start); GnuTLS is loaded with dlopen only when TLS is
# used (src/util/tlslazy.h: libmicrohttpd's GnuTLS calls go through trampolines) and libm only if
# an SQL math function runs (src/util/mlazy.c). On x86-64 and AArch64; elsewhere all is dynamic.
# libmicrohttpd's sendfile calls go through src/http/bigsend.c (2 MiB per call, not 128 KiB)
LDLIBS  += -Wl,--wrap=sendfile64
ifneq ($(filter x86_64-% aarch64-%,$(TARGET)),)
CFLAGS  += -DBERTH_LAZYLIBS=1
LDLIBS  += -Wl,-Bstatic $(shell $(PKG_CONFIG) --libs $(filter-out gnutls,$(PKGS))) -lcrypt \
	   -Wl,-Bdynamic -lpthread -ldl
else
LDLIBS  += $(PKG_LIBS) -lcrypt -lm -lpthread -ldl
endif

# B: where a build goes (build/ for this machine; a cross build is a sub-make with B=build/<arch>)
B       ?= build
SRC      = $(shell find src -name '*.c' | sort)
LIBSRC   = $(filter-out src/main.c,$(SRC))
OBJ      = $(SRC:src/%.c=$(B)/obj/%.o)
ASAN_OBJ = $(SRC:src/%.c=build/asan/%.o)
UNIT     = $(patsubst tests/unit/%.c,build/unit/%,$(wildcard tests/unit/*.c))
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# ASan intercepts crypt_r and calls the real one found in a shared libcrypt: the sanitizer builds
# link it dynamically (the static archive's copy would never be pulled in)
SANLIBS  = -Wl,--no-as-needed -lcrypt

.PHONY: all deps test-deps run test asan unit bench format clean pkgcheck
# the packages first, then a make that reads its flags from them
all:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory build/berth

deps:
	@scripts/deps.sh build

pkgcheck:
	@case "$(PKG_CFLAGS) $(PKG_LIBS)" in *PKGFAIL*) \
	    $(PKG_CONFIG) --cflags --libs $(PKGS) libcurl libarchive >/dev/null; \
	    echo "$(PKG_CONFIG) cannot find every library berth builds with: run scripts/deps.sh build" >&2; \
	    exit 1;; esac

$(B)/berth: $(OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/obj/%.o: src/%.c $(wildcard src/*.h src/*/*.h) | pkgcheck
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

build/asan/berth: $(ASAN_OBJ)
	$(CC) $(CFLAGS) $(SANFLAGS) -o $@ $^ $(LDLIBS) $(SANLIBS)

build/asan/%.o: src/%.c $(wildcard src/*.h src/*/*.h) | pkgcheck
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -O1 $(SANFLAGS) -c -o $@ $<

build/unit/%: tests/unit/%.c tests/unit/unit.h $(filter-out build/asan/main.o,$(ASAN_OBJ))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -O1 $(SANFLAGS) -Itests/unit -o $@ $< $(filter-out build/asan/main.o,$(ASAN_OBJ)) $(LDLIBS) $(SANLIBS)

asan: build/asan/berth
unit: $(UNIT)

run: all
	mkdir -p data
	build/berth serve $(if $(CONFIG),-c $(CONFIG),)

test:
	@scripts/deps.sh test $(TEST_ARCHES)
	@$(MAKE) --no-print-directory build/berth build/asan/berth $(UNIT) $(TEST_EXTRA)
	@tests/run.sh

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory build/berth
	@bench/run.sh

-include tests/fuzz/fuzz.mk

format:
	clang-format -i $(SRC) $(wildcard src/*.h src/*/*.h tests/unit/*.c)

clean:
	rm -rf build

# ==== issue 22: other architectures, install, Debian package, OCI image ===========================
# make build/arm64/berth, make build/armhf/berth: a cross build with Debian's cross toolchain (the
# packages come from `scripts/deps.sh build ARCH`), in a sub-make whose CC is the cross compiler and
# whose pkg-config reads only that architecture's .pc files; objects in build/<arch>/obj. The
# fuzzers and the ASan build stay host builds (they are built by this, native, make).
CROSS_arm64 = aarch64-linux-gnu
CROSS_armhf = arm-linux-gnueabihf
CROSS_ARCHES = arm64 armhf
# the architectures `make test` also builds and runs under qemu-user (TEST_ARCHES= for none;
# armhf needs the 1L << 40 limits of src/store/meta_pg.c and meta_sqlite.c made LONG_MAX first)
TEST_ARCHES ?= arm64
cross_pkgconfig = $(if $(shell command -v $(CROSS_$(1))-pkg-config),$(CROSS_$(1))-pkg-config,env \
	PKG_CONFIG_LIBDIR=/usr/lib/$(CROSS_$(1))/pkgconfig:/usr/share/pkgconfig pkg-config)
.PHONY: FORCE cross
ifeq ($(B),build)
$(CROSS_ARCHES:%=build/%/berth): build/%/berth: FORCE
	@scripts/deps.sh build $*
	@$(MAKE) --no-print-directory B=build/$* CC=$(CROSS_$*)-gcc \
	    PKG_CONFIG="$(call cross_pkgconfig,$*)" build/$*/berth
cross: $(CROSS_ARCHES:%=build/%/berth)
# what `make test` builds beside the native binaries: the cross builds (tests/run.sh runs each
# under qemu-user when it exists), the package and the root tests/integration/deb.sh installs it into
TEST_EXTRA = $(TEST_ARCHES:%=build/%/berth) deb debroot image
endif
FORCE:

# make install [DESTDIR=...] [PREFIX=/usr] [ARCH=arm64|armhf]: the binary, the configuration (kept
# when one is there), the systemd units, the man page and the license. make deb [ARCH=...]:
# build/berth_<version>_<arch>.deb from the same tree (packaging/, scripts/deb-control.sh).
HOST_ARCH  := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
ARCH       ?= $(HOST_ARCH)
BIN         = $(if $(filter $(HOST_ARCH),$(ARCH)),build/berth,build/$(ARCH)/berth)
STRIP_BIN   = $(if $(filter $(HOST_ARCH),$(ARCH)),strip,$(CROSS_$(ARCH))-strip)
PREFIX     ?= /usr
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system
VERSION    := $(shell sed -n 's/^\#define BERTH_VERSION "\(.*\)"/\1/p' src/serve.h)
DEB         = build/berth_$(VERSION)_$(ARCH).deb
DEBROOT     = build/deb/$(ARCH)/root
.PHONY: install deb
install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/berth
	[ -e $(DESTDIR)$(SYSCONFDIR)/berth/config.yml ] || \
	    install -D -m 0644 packaging/config.yml $(DESTDIR)$(SYSCONFDIR)/berth/config.yml
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/doc/berth
	for u in berth.service berth-gc.service berth-gc.timer; do \
	    sed -e 's|/usr/bin/berth|$(PREFIX)/bin/berth|' -e 's|/etc/berth/|$(SYSCONFDIR)/berth/|' \
	        packaging/$$u >$(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; done
	gzip -9n <packaging/berth.8 >$(DESTDIR)$(PREFIX)/share/man/man8/berth.8.gz
	install -m 0644 LICENSE $(DESTDIR)$(PREFIX)/share/doc/berth/copyright
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/berth/README.md

deb: $(DEB)
$(DEB): $(BIN) $(wildcard packaging/* packaging/deb/*) LICENSE scripts/deb-control.sh
	rm -rf $(DEBROOT) && mkdir -p $(DEBROOT)/DEBIAN
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/$(DEBROOT) PREFIX=/usr SYSCONFDIR=/etc \
	    UNITDIR=/lib/systemd/system ARCH=$(ARCH)
	$(STRIP_BIN) --strip-unneeded $(DEBROOT)/usr/bin/berth
	install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm $(DEBROOT)/DEBIAN/
	install -m 0644 packaging/deb/conffiles $(DEBROOT)/DEBIAN/
	scripts/deb-control.sh $(ARCH) $(VERSION) $(CURDIR)/$(DEBROOT) >$(DEBROOT)/DEBIAN/control
	dpkg-deb --root-owner-group -Zxz --build $(DEBROOT) $@

# make debroot [ARCH=...]: the throwaway Debian root tests/integration/deb.sh installs the package
# into (a minbase bookworm made by mmdebstrap through apt from Debian's mirror, once; under
# qemu-user for a foreign architecture)
.PHONY: debroot
debroot: build/deb/root-$(ARCH).tar
build/deb/root-%.tar:
	@mkdir -p $(dir $@)
	mmdebstrap --quiet --format=tar --variant=minbase --architectures=$* bookworm $@.tmp http://deb.debian.org/debian
	mv $@.tmp $@

# make image: berth's own OCI image, an index of IMAGE_ARCHES, as the OCI layout build/image (tag
# <version>, and <version>-<arch> each), made from each architecture's package tree by
# scripts/image.sh; `skopeo copy --all oci:build/image:<version> docker://...` publishes it
IMAGE_ARCHES ?= amd64 arm64
.PHONY: image
image:
	@for a in $(IMAGE_ARCHES); do $(MAKE) --no-print-directory deb ARCH=$$a || exit 1; done
	@if [ ! -f build/image/index.json ] || \
	    [ -n "$$(find build -maxdepth 1 -name 'berth_*.deb' -newer build/image/index.json)" ] || \
	    [ scripts/image.sh -nt build/image/index.json ]; then \
	    scripts/image.sh build/image $(VERSION) $(IMAGE_ARCHES); fi
