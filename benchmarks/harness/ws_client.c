/* The WebSocket echo load client of benchmarks/ws_echo.py (compiled at run time by harness/wsload.py).

       ws_client PORT CONNECTIONS SIZE SECONDS

   Opens CONNECTIONS WebSockets to 127.0.0.1:PORT/ (the RFC 6455 handshake, one after the other, no
   extension offered: no permessage-deflate), then on every connection sends one SIZE-byte text message
   (a masked frame built once) and waits for its echo before sending the next (ping-pong), for SECONDS.
   One thread, epoll, one send and one read per message: the client's own cost per message is a few
   system calls, so that the server (Python) is the limit, not the client.

   Every reply is checked: it must be one unmasked text frame carrying exactly the bytes sent (the whole
   frame is compared). A ping is answered with a pong; a close frame, an end of file, a frame that is not
   the echo, a short write or 5 s without any echo end the run with one line on stderr and exit status 1.
   At the end it prints one JSON object on stdout: the echoes received within the window (messages) and
   in all (total, with those in flight when the window ended), the window's length, and the client's
   own CPU seconds during the window (user, system).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65535
#define STALL_SECONDS 5.0
/* the key of RFC 6455 section 1.3 and the accept value it must produce */
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

struct conn {
    int fd;
    int index;
    size_t len;              /* bytes waiting in buf */
    int waiting;             /* a message was sent and its echo has not arrived */
    long long echoes;
    unsigned char *buf;
};

static unsigned char *frame, *expect;
static size_t frame_len, expect_len, buf_cap;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ws_client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(int system) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct timeval tv = system ? ru.ru_stime : ru.ru_utime;
    return tv.tv_sec + tv.tv_usec / 1e6;
}

/* a masked client frame: FIN + opcode, the length, the mask, the payload xor the mask */
static size_t build_client_frame(unsigned char *out, int opcode, const unsigned char *payload, size_t n) {
    static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = 0;
    out[h++] = 0x80 | opcode;
    if (n < 126) {
        out[h++] = 0x80 | n;
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = n >> 8;
        out[h++] = n & 0xff;
    }
    memcpy(out + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) out[h + i] = payload[i] ^ mask[i % 4];
    return h + n;
}

static int contains_nocase(const char *hay, const char *needle) {
    return strcasestr(hay, needle) != NULL;
}

static void handshake(struct conn *c, int port) {
    char req[512], head[8192];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connection %d: connect to 127.0.0.1:%d: %s", c->index, port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n", port);
    if (send(fd, req, n, 0) != n) die("connection %d: short write of the handshake", c->index);
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got >= sizeof head - 1) die("connection %d: handshake response head too long", c->index);
        ssize_t r = recv(fd, head + got, sizeof head - 1 - got, 0);
        if (r <= 0) die("connection %d: handshake: %s", c->index, r == 0 ? "closed by the server" : strerror(errno));
        got += r;
        head[got] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    size_t head_len = end + 4 - head;
    char saved = head[head_len];
    head[head_len] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(head, "\r\n");
        if (eol) *eol = 0;
        die("connection %d: the upgrade was refused: %s", c->index, head);
    }
    if (!contains_nocase(head, "\r\nsec-websocket-accept: " ACCEPT "\r\n"))
        die("connection %d: no or a wrong Sec-WebSocket-Accept in the 101 response", c->index);
    if (contains_nocase(head, "\r\nsec-websocket-extensions:"))
        die("connection %d: the server negotiated an extension none was offered", c->index);
    head[head_len] = saved;
    c->fd = fd;
    c->len = got - head_len;
    if (c->len > buf_cap) die("connection %d: data after the handshake", c->index);
    memcpy(c->buf, head + head_len, c->len);
    struct timeval zero = {0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
}

static void send_all(struct conn *c, const unsigned char *data, size_t n) {
    ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL);
    if (w != (ssize_t)n)
        die("connection %d: short write (%zd of %zu bytes): %s", c->index, w, n, w < 0 ? strerror(errno) : "");
}

/* consume the complete frames in c->buf; returns the echoes found */
static int take_frames(struct conn *c) {
    int echoes = 0;
    size_t off = 0;
    while (c->len - off >= 2) {
        unsigned char *f = c->buf + off;
        size_t avail = c->len - off, hdr = 2, n = f[1] & 0x7f;
        if (f[1] & 0x80) die("connection %d: the server sent a masked frame", c->index);
        if (n == 127) die("connection %d: a frame of 64 KiB or more where an echo was expected", c->index);
        if (n == 126) {
            if (avail < 4) break;
            n = (size_t)f[2] << 8 | f[3];
            hdr = 4;
        }
        if (avail < hdr + n) break;
        int opcode = f[0] & 0x0f;
        if (opcode == 0x8) {
            int code = n >= 2 ? f[2] << 8 | f[3] : 1005;
            die("connection %d: the server closed the WebSocket (close code %d) after %lld echoes", c->index, code,
                c->echoes);
        } else if (opcode == 0x9) {  /* ping: answer with a pong of the same payload */
            unsigned char pong[256];
            if (n > 125) die("connection %d: a ping of %zu bytes", c->index, n);
            send_all(c, pong, build_client_frame(pong, 0xA, f + hdr, n));
        } else if (opcode == 0xA) {
            /* an unsolicited pong is allowed and ignored */
        } else {
            if (hdr + n != expect_len || memcmp(f, expect, expect_len) != 0)
                die("connection %d: a reply that is not the echo (first bytes %02x %02x, %zu bytes) after %lld "
                    "echoes", c->index, f[0], f[1], hdr + n, c->echoes);
            if (!c->waiting) die("connection %d: an echo of a message not sent", c->index);
            c->waiting = 0;
            c->echoes++;
            echoes++;
        }
        off += hdr + n;
    }
    if (off) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
    return echoes;
}

int main(int argc, char **argv) {
    if (argc != 5) die("usage: ws_client PORT CONNECTIONS SIZE SECONDS");
    int port = atoi(argv[1]), nconn = atoi(argv[2]);
    long size = atol(argv[3]);
    double seconds = atof(argv[4]);
    if (port <= 0 || nconn <= 0 || size <= 0 || size > MAX_SIZE || seconds <= 0) die("bad arguments");

    unsigned char *payload = malloc(size);
    static const char text[] = "hello world";
    for (long i = 0; i < size; i++) payload[i] = size == 11 ? text[i] : "abcdefghijklmnopqrstuvwxyz0123456789"[i % 36];
    frame = malloc(size + 8);
    frame_len = build_client_frame(frame, 0x1, payload, size);
    expect = malloc(size + 4);
    expect[0] = 0x81;
    if (size < 126) {
        expect[1] = size;
        expect_len = 2;
    } else {
        expect[1] = 126;
        expect[2] = size >> 8;
        expect[3] = size & 0xff;
        expect_len = 4;
    }
    memcpy(expect + expect_len, payload, size);
    expect_len += size;
    buf_cap = expect_len + 4096;

    struct conn *conns = calloc(nconn, sizeof *conns);
    int ep = epoll_create1(0);
    double hs_began = now();
    for (int i = 0; i < nconn; i++) {
        conns[i].index = i;
        conns[i].buf = malloc(buf_cap);
        handshake(&conns[i], port);
    }
    double hs_seconds = now() - hs_began;
    for (int i = 0; i < nconn; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    }

    long long in_window = 0, total = 0;
    int inflight = 0, sending = 1;
    struct epoll_event events[256];
    double began = now(), end = began + seconds, last_echo = began;
    double user0 = cpu(0), sys0 = cpu(1), user1 = 0, sys1 = 0, window = 0;
    for (int i = 0; i < nconn; i++) {
        send_all(&conns[i], frame, frame_len);
        conns[i].waiting = 1;
        inflight++;
    }
    while (sending || inflight) {
        int n = epoll_wait(ep, events, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait: %s", strerror(errno));
        }
        double t = now();
        if (sending && t >= end) {  /* the window is over: let the echoes in flight arrive, send no more */
            sending = 0;
            window = t - began;
            user1 = cpu(0);
            sys1 = cpu(1);
        }
        for (int e = 0; e < n; e++) {
            struct conn *c = events[e].data.ptr;
            for (;;) {
                ssize_t r = recv(c->fd, c->buf + c->len, buf_cap - c->len, 0);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EINTR) break;
                    die("connection %d: read: %s after %lld echoes", c->index, strerror(errno), c->echoes);
                }
                if (r == 0)
                    die("connection %d: the server closed the connection %s after %lld echoes", c->index,
                        c->len ? "in the middle of a frame (a short read)" : "without a close frame", c->echoes);
                c->len += r;
                int got = take_frames(c);
                if (got) {
                    total += got;
                    inflight -= got;
                    if (sending) in_window += got;
                    last_echo = t;
                    if (sending) {
                        send_all(c, frame, frame_len);
                        c->waiting = 1;
                        inflight++;
                    }
                }
                if (c->len == buf_cap) die("connection %d: more than %zu bytes unanswered", c->index, buf_cap);
                if ((size_t)r < buf_cap - (c->len - r)) break;  /* the kernel buffer is drained */
            }
        }
        if (t - last_echo > STALL_SECONDS)
            die("no echo for %.0f s, %d messages unanswered (%s)", STALL_SECONDS, inflight,
                sending ? "during the run" : "after the window");
    }
    long long lo = -1, hi = 0;
    for (int i = 0; i < nconn; i++) {
        if (lo < 0 || conns[i].echoes < lo) lo = conns[i].echoes;
        if (conns[i].echoes > hi) hi = conns[i].echoes;
        unsigned char close_frame[16], code[2] = {0x03, 0xe8};  /* 1000: normal closure */
        send(conns[i].fd, close_frame, build_client_frame(close_frame, 0x8, code, 2), MSG_NOSIGNAL);
        close(conns[i].fd);
    }
    printf("{\"connections\": %d, \"size\": %ld, \"frame_bytes\": %zu, \"echo_bytes\": %zu, \"messages\": %lld, "
           "\"total\": %lld, \"seconds\": %.6f, \"messages_per_s\": %.1f, \"client_cpu_user_s\": %.4f, "
           "\"client_cpu_system_s\": %.4f, \"handshakes_s\": %.4f, \"per_connection_min\": %lld, "
           "\"per_connection_max\": %lld}\n",
           nconn, size, frame_len, expect_len, in_window, total, window, window > 0 ? in_window / window : 0.0,
           user1 - user0, sys1 - sys0, hs_seconds, lo, hi);
    return 0;
}
