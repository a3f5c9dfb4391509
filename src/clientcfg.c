/*
 * clientcfg: `berth client-config` prints the files that point a container client at berth as a
 * mirror: containerd hosts.toml (one per registry; containerd then sends ?ns=<registry>), k3s
 * registries.yaml, Docker daemon.json (Docker mirrors only docker.io), and podman's
 * registries.conf (podman sends no ns, so it uses berth's path-prefix form <berth>/<registry>).
 */
#include "clientcfg.h"

#include <stdio.h>
#include <string.h>

/* Where containerd would go without berth: Docker Hub's API host differs from its name. */
static const char *upstream_server(const char *reg)
{
    return strcmp(reg, "docker.io") ? reg : "registry-1.docker.io";
}

/* host[:port] of an http(s) URL, and whether it is plain http. */
static void url_host(const char *url, char *host, size_t len, int *plain)
{
    *plain = strncmp(url, "http://", 7) == 0;
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    snprintf(host, len, "%.*s", (int)strcspn(h, "/"), h);
}

int clientcfg_print(FILE *out, const char *client, const char *endpoint, const char **regs,
                    size_t nregs)
{
    char host[256];
    int plain;
    url_host(endpoint, host, sizeof host, &plain);
    if (!strcmp(client, "containerd")) {
        for (size_t i = 0; i < nregs; i++) {
            fprintf(out, "# /etc/containerd/certs.d/%s/hosts.toml\n", regs[i]);
            fprintf(out,
                    "server = \"https://%s\"\n\n[host.\"%s\"]\n  capabilities = [\"pull\", "
                    "\"resolve\"]\n\n",
                    upstream_server(regs[i]), endpoint);
        }
        fputs("# containerd's config.toml must point at that directory:\n"
              "#   [plugins.\"io.containerd.grpc.v1.cri\".registry]\n"
              "#     config_path = \"/etc/containerd/certs.d\"\n",
              out);
        return 0;
    }
    if (!strcmp(client, "k3s")) {
        fputs("# /etc/rancher/k3s/registries.yaml\n"
              "# A site without Internet access starts k3s with\n"
              "# --disable-default-registry-endpoint, so a pull never falls back to the\n"
              "# upstream registry when berth cannot answer.\n"
              "mirrors:\n",
              out);
        for (size_t i = 0; i < nregs; i++)
            fprintf(out, "  \"%s\":\n    endpoint:\n      - \"%s\"\n", regs[i], endpoint);
        return 0;
    }
    if (!strcmp(client, "docker")) {
        /* JSON has no comments: the file is usable exactly as printed (its place and Docker's
         * docker.io-only rule are in the usage text and docs/mirrors.md) */
        fprintf(out, "{\n  \"registry-mirrors\": [\"%s\"]%s", endpoint, plain ? ",\n" : "\n");
        if (plain) fprintf(out, "  \"insecure-registries\": [\"%s\"]\n", host);
        fputs("}\n", out);
        return 0;
    }
    if (!strcmp(client, "podman")) {
        fputs("# /etc/containers/registries.conf.d/berth.conf\n", out);
        for (size_t i = 0; i < nregs; i++)
            fprintf(out,
                    "[[registry]]\nprefix = \"%s\"\nlocation = \"%s\"\n\n[[registry.mirror]]\n"
                    "location = \"%s/%s\"\n%s\n",
                    regs[i], regs[i], host, regs[i], plain ? "insecure = true\n" : "");
        return 0;
    }
    return -1;
}
