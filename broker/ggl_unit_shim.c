// LD_PRELOAD shim for ggipcd where cgroups are not writable (broker/greengrass_lite.py).
//
// ggipcd hands a component its token (SVCUID) only if systemd says the connecting process
// runs in the unit "ggl.<componentName>.service"; sd_pid_get_unit() is the only libsystemd
// call it makes. This replacement takes the unit from EDGEBOOST_GGL_COMPONENT in the peer's
// initial environment instead, which greengrass_lite.py sets only on the process that asks
// for a token. Development use only (tests, edgeboost demo): any local process could claim any
// component this way.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static const char KEY[] = "EDGEBOOST_GGL_COMPONENT=";

int sd_pid_get_unit(pid_t pid, char **unit) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int) pid);
    FILE *environ_file = fopen(path, "re");
    if (environ_file == NULL) {
        return -errno;
    }
    int result = -ENODATA;
    char *entry = NULL;
    size_t size = 0;
    // Entries are NUL-separated; getdelim copes with environments of any size.
    while (getdelim(&entry, &size, '\0', environ_file) > 0) {
        if (strncmp(entry, KEY, sizeof KEY - 1) == 0) {
            result = asprintf(unit, "ggl.%s.service", entry + sizeof KEY - 1) < 0 ? -ENOMEM : 0;
            break;
        }
    }
    free(entry);
    fclose(environ_file);
    return result;
}
