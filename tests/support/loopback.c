/*
 * LD_PRELOAD shim that keeps servers on loopback.
 *
 * Orthanc 1.10 and dcmtk's storescp have no bind-address option and always listen on the
 * wildcard address. This library wraps bind(): an AF_INET wildcard address (0.0.0.0) becomes
 * 127.0.0.1 and an AF_INET6 wildcard address (::) becomes ::1. Every other address, and every
 * other family, is passed through unchanged.
 *
 * Build: gcc -shared -fPIC -O2 -o libloopback.so loopback.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn next_bind(void)
{
    static bind_fn real = NULL;
    if (real == NULL) {
        real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    }
    return real;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    bind_fn real = next_bind();
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (addr != NULL && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in4;
        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&in4, (socklen_t)sizeof in4);
        }
    } else if (addr != NULL && addr->sa_family == AF_INET6
               && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof in6);
        if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6.sin6_addr) == 0) {
            in6.sin6_addr = in6addr_loopback;
            return real(fd, (const struct sockaddr *)&in6, (socklen_t)sizeof in6);
        }
    }
    return real(fd, addr, len);
}
