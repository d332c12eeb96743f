/*
 * support: free ports and program lookup for the tests.
 */
#include "support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int af_test_free_port(void) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

        if (fd >= 0 && !bind(fd, (struct sockaddr *) &sa, sizeof(sa)) &&
            !getsockname(fd, (struct sockaddr *) &sa, &len))
                port = ntohs(sa.sin_port);
        if (fd >= 0)
                close(fd);
        return port;
}

bool af_test_find_program(const char *name, char *out, size_t out_size) {
        const char *path = getenv("PATH");
        char dirs[4096];

        snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/usr/bin", path ? path : "");
        for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d;
             d = strtok_r(NULL, ":", &save)) {
                snprintf(out, out_size, "%s/%s", d, name);
                if (access(out, X_OK) == 0)
                        return true;
        }
        return false;
}
