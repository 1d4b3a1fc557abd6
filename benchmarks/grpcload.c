/*
 * grpcload: a small h2load for gRPC whose requests differ.
 *
 * h2load sends one body to every request; a Get over many ids, or Updates that each carry
 * their own resource's etag, need a body per request. This sends the gRPC messages of a
 * file in turn (each a 5-byte length-prefixed message, as on the wire), over plain
 * HTTP/2 (h2c, prior knowledge), from `connections` connections with `streams` calls in
 * flight on each, until `requests` calls have been answered (or, given a duration, until
 * it has passed and the calls in flight are answered). It prints one JSON object: calls
 * per second, latency percentiles of all calls and of the OK ones, how many failed calls
 * were answered RESOURCE_EXHAUSTED or UNAVAILABLE within 100 ms, and the count of each
 * grpc-status.
 *
 *   grpcload HOST PORT PATH BODIES CONNECTIONS STREAMS REQUESTS [TIMEOUT_MS [SECONDS [OUT]]]
 *
 * TIMEOUT_MS (0: none) is each call's grpc-timeout; OUT, a file that receives the
 * response message of every OK call (length-prefixed, as on the wire).
 *
 * Built by the benchmarks with `cc -O2 grpcload.c -lnghttp2` (Debian: libnghttp2-dev).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const uint8_t *data;
    size_t length;
} body_t;

typedef struct connection connection_t;

typedef struct {
    connection_t *conn;
    const body_t *body;
    size_t sent;
    double started;
    int status; /* grpc-status, -1 until seen */
    int in_use;
    uint8_t *response;
    size_t response_length, response_capacity;
} call_t;

struct connection {
    int fd;
    nghttp2_session *session;
    call_t *calls;
    int streams;
    int in_flight;
    char authority[128];
};

static body_t *bodies;
static size_t body_count;
static size_t next_body;
static long issued, answered, wanted, ok_count, failed, failed_fast;
static double *latencies, *ok_latencies;
static double stop_at; /* 0: stop by count */
static FILE *out;
static long status_counts[17];
static long other_status;
static const char *path;
static char timeout_header[32];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void load_bodies(const char *file) {
    int fd = open(file, O_RDONLY);
    if (fd < 0) die(file);
    struct stat st;
    if (fstat(fd, &st) < 0) die("fstat");
    uint8_t *all = malloc(st.st_size);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, all + got, st.st_size - got);
        if (n <= 0) die("read");
        got += n;
    }
    close(fd);
    size_t capacity = 1024;
    bodies = malloc(capacity * sizeof(body_t));
    size_t at = 0;
    while (at + 5 <= got) {
        uint32_t length = ((uint32_t)all[at + 1] << 24) | ((uint32_t)all[at + 2] << 16) |
                          ((uint32_t)all[at + 3] << 8) | all[at + 4];
        if (at + 5 + length > got) break;
        if (body_count == capacity) {
            capacity *= 2;
            bodies = realloc(bodies, capacity * sizeof(body_t));
        }
        bodies[body_count].data = all + at;
        bodies[body_count].length = 5 + length;
        body_count++;
        at += 5 + length;
    }
    if (body_count == 0) {
        fprintf(stderr, "%s holds no gRPC message\n", file);
        exit(2);
    }
}

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                         size_t length, uint32_t *flags, nghttp2_data_source *source,
                         void *user_data) {
    call_t *call = source->ptr;
    size_t left = call->body->length - call->sent;
    size_t n = left < length ? left : length;
    memcpy(buf, call->body->data + call->sent, n);
    call->sent += n;
    if (call->sent == call->body->length) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return n;
}

#define HEADER(name, value) \
    { (uint8_t *)name, (uint8_t *)value, sizeof(name) - 1, strlen(value), NGHTTP2_NV_FLAG_NONE }

static void issue(connection_t *conn) {
    if (stop_at > 0 && now() >= stop_at) return;
    while (conn->in_flight < conn->streams && issued < wanted) {
        call_t *call = NULL;
        for (int i = 0; i < conn->streams; i++)
            if (!conn->calls[i].in_use) {
                call = &conn->calls[i];
                break;
            }
        if (!call) return;
        call->in_use = 1;
        call->conn = conn;
        call->body = &bodies[next_body++ % body_count];
        call->sent = 0;
        call->status = -1;
        call->response_length = 0;
        call->started = now();
        nghttp2_nv headers[] = {
            HEADER(":method", "POST"),
            HEADER(":scheme", "http"),
            HEADER(":path", path),
            HEADER(":authority", conn->authority),
            HEADER("content-type", "application/grpc"),
            HEADER("te", "trailers"),
            HEADER("grpc-timeout", timeout_header),
        };
        size_t count = sizeof(headers) / sizeof(headers[0]) - (timeout_header[0] ? 0 : 1);
        headers[count - 1].valuelen = strlen((char *)headers[count - 1].value);
        nghttp2_data_provider provider = {.source.ptr = call, .read_callback = read_body};
        if (nghttp2_submit_request(conn->session, NULL, headers, count, &provider, call) < 0) {
            fprintf(stderr, "submit failed\n");
            exit(2);
        }
        conn->in_flight++;
        issued++;
    }
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
    call_t *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (call && namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int status = 0;
        for (size_t i = 0; i < valuelen && value[i] >= '0' && value[i] <= '9'; i++)
            status = status * 10 + (value[i] - '0');
        call->status = status;
    }
    return 0;
}

static int on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                   const uint8_t *data, size_t len, void *user_data) {
    call_t *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!call || !out) return 0;
    if (call->response_length + len > call->response_capacity) {
        call->response_capacity = (call->response_length + len) * 2;
        call->response = realloc(call->response, call->response_capacity);
    }
    memcpy(call->response + call->response_length, data, len);
    call->response_length += len;
    return 0;
}

static int on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                    void *user_data) {
    call_t *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!call) return 0;
    connection_t *conn = call->conn;
    double took = now() - call->started;
    if (answered < wanted) latencies[answered] = took;
    answered++;
    if (call->status >= 0 && call->status <= 16)
        status_counts[call->status]++;
    else
        other_status++;
    if (call->status == 0) {
        ok_latencies[ok_count++] = took;
        if (out && call->response_length) fwrite(call->response, 1, call->response_length, out);
    } else {
        failed++;
        if (took < 0.1 && (call->status == 8 || call->status == 14)) failed_fast++;
    }
    call->in_use = 0;
    conn->in_flight--;
    issue(conn);
    return 0;
}

static ssize_t send_data(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                         void *user_data) {
    connection_t *conn = user_data;
    ssize_t n = send(conn->fd, data, length, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return n;
}

static int connect_to(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found;
    if (getaddrinfo(host, port, &hints, &found) != 0) die("getaddrinfo");
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) < 0) die("connect");
    freeaddrinfo(found);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: grpcload HOST PORT PATH BODIES CONNECTIONS STREAMS REQUESTS"
                        " [TIMEOUT_MS [SECONDS [OUT]]]\n");
        return 2;
    }
    path = argv[3];
    load_bodies(argv[4]);
    int connections = atoi(argv[5]), streams = atoi(argv[6]);
    wanted = atol(argv[7]);
    if (argc > 8 && atoi(argv[8]) > 0)
        snprintf(timeout_header, sizeof(timeout_header), "%sm", argv[8]);
    latencies = calloc(wanted, sizeof(double));
    ok_latencies = calloc(wanted, sizeof(double));
    if (argc > 10) {
        out = fopen(argv[10], "wb");
        if (!out) die(argv[10]);
    }
    connection_t *conns = calloc(connections, sizeof(connection_t));
    nghttp2_session_callbacks *callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_send_callback(callbacks, send_data);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_close);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
    double started = now();
    if (argc > 9 && atof(argv[9]) > 0) stop_at = started + atof(argv[9]);
    for (int i = 0; i < connections; i++) {
        connection_t *conn = &conns[i];
        conn->fd = connect_to(argv[1], argv[2]);
        conn->streams = streams;
        conn->calls = calloc(streams, sizeof(call_t));
        snprintf(conn->authority, sizeof(conn->authority), "%s:%s", argv[1], argv[2]);
        nghttp2_session_client_new(&conn->session, callbacks, conn);
        nghttp2_settings_entry settings[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
            {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1 << 30)},
        };
        nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, settings, 2);
        nghttp2_session_set_local_window_size(conn->session, NGHTTP2_FLAG_NONE, 0, (1 << 30));
        issue(conn);
    }
    struct pollfd *fds = calloc(connections, sizeof(struct pollfd));
    uint8_t buffer[65536];
    for (;;) {
        int in_flight = 0;
        for (int i = 0; i < connections; i++) in_flight += conns[i].in_flight;
        if (answered >= wanted || (stop_at > 0 && now() >= stop_at && in_flight == 0)) break;
        for (int i = 0; i < connections; i++) {
            fds[i].fd = conns[i].fd;
            fds[i].events = POLLIN | (nghttp2_session_want_write(conns[i].session) ? POLLOUT : 0);
        }
        if (poll(fds, connections, 10000) <= 0) {
            fprintf(stderr, "no progress for 10 s (%ld of %ld answered)\n", answered, wanted);
            return 1;
        }
        for (int i = 0; i < connections; i++) {
            connection_t *conn = &conns[i];
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t n = recv(conn->fd, buffer, sizeof(buffer), 0);
                if (n == 0) {
                    fprintf(stderr, "the server closed a connection\n");
                    return 1;
                }
                if (n > 0 && nghttp2_session_mem_recv(conn->session, buffer, n) < 0) {
                    fprintf(stderr, "HTTP/2 error\n");
                    return 1;
                }
            }
            if (nghttp2_session_send(conn->session) != 0) {
                fprintf(stderr, "send failed\n");
                return 1;
            }
        }
    }
    double seconds = now() - started;
    long done = answered < wanted ? answered : wanted;
    if (out) fclose(out);
    qsort(latencies, done, sizeof(double), compare);
    qsort(ok_latencies, ok_count, sizeof(double), compare);
    printf("{\"requests\": %ld, \"seconds\": %.3f, \"rps\": %.1f, \"ok_rps\": %.1f,"
           " \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"ok_p50_ms\": %.3f, \"ok_p99_ms\": %.3f,"
           " \"failed\": %ld, \"failed_within_100ms\": %ld, \"statuses\": {",
           done, seconds, done / seconds, ok_count / seconds,
           done ? latencies[done / 2] * 1000 : 0, done ? latencies[(long)(done * 0.99)] * 1000 : 0,
           ok_count ? ok_latencies[ok_count / 2] * 1000 : 0,
           ok_count ? ok_latencies[(long)(ok_count * 0.99)] * 1000 : 0, failed, failed_fast);
    int first = 1;
    for (int code = 0; code <= 16; code++) {
        if (!status_counts[code]) continue;
        printf("%s\"%d\": %ld", first ? "" : ", ", code, status_counts[code]);
        first = 0;
    }
    if (other_status) printf("%s\"none\": %ld", first ? "" : ", ", other_status);
    printf("}}\n");
    return 0;
}
