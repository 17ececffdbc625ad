/* fuzz_native.c - arbitrary upstream bytes through the native engine's
 * answer side (issue 17.4): status lines, heads, chunking, bodies read to
 * EOF, interim answers, split wherever the input says, with and without
 * streaming, pausing and resuming, on a real loop and a real connection
 * (one end of a socketpair in the engine's pool), bytes handed to the
 * parser with mg_native__feed exactly as the read callback does.
 *
 * Input: flags, step, split (2 bytes, little-endian), then the answer.
 * The first `split` bytes are fed at once, the rest `step` bytes at a time
 * (step 0: all at once).
 *   flags bit 0  a streaming call
 *   flags bit 1  a HEAD request
 *   flags bit 2  on_data refuses every piece once (MG_UP_PAUSE), so the
 *                engine holds and re-delivers bytes
 *   flags bit 3  max_response 64 bytes
 *   flags bit 4  the upstream closes the connection after the last byte
 *   flags bit 5  on_data refuses a piece for good (the client left)
 *
 * What must hold: on_done at most once and never after cancel; an "ok"
 * answer has a final status 200-599 other than 101 (interim answers are
 * skipped); no body on 204/205/304/HEAD; a buffered body within
 * max_response; re-delivered bytes are the refused ones; the streamed
 * bytes are the answer's body in order (the same input not streamed gives
 * the same bytes); the loop closes clean. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "common/buf.h"
#include "upstream/native.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
  unsigned flags;
  struct mg_up_call *call;
  int ndone;
  enum mg_up_result res;
  long status;
  bool streaming, released, held, closed;
  struct mg_buf got;      /* streamed or buffered body */
  struct mg_buf offered;  /* a refused piece */
  size_t npieces;
};

static size_t on_data(struct mg_up_call *call, const char *p, size_t n) {
  struct run *r = call->owner;
  if (r->ndone)
    abort(); /* data after the end */
  if ((r->flags & 4) && !r->held) {
    r->held = true;
    mg_buf_reset(&r->offered);
    if (mg_buf_append(&r->offered, p, n) != 0)
      abort();
    return MG_UP_PAUSE;
  }
  if (r->held) {
    if (n != r->offered.len || memcmp(p, r->offered.data, n) != 0)
      abort(); /* resume() must give the same bytes again */
    r->held = false;
  }
  if ((r->flags & 32) && ++r->npieces == 2)
    return 0; /* the client left */
  if (mg_buf_append(&r->got, p, n) != 0)
    abort();
  return n;
}

static void on_done(struct mg_up_call *call, enum mg_up_result res) {
  struct run *r = call->owner;
  if (r->ndone++)
    abort();
  r->res = res;
  r->status = call->status;
  r->streaming = call->streaming;
  if (!call->streaming && call->body.len &&
      mg_buf_append(&r->got, call->body.data, call->body.len) != 0)
    abort();
  if (res == MG_UP_OK) {
    long st = call->status;
    if (st < 200 || st > 599 || st == 101)
      abort();
    if ((st == 204 || st == 205 || st == 304 || (r->flags & 2)) &&
        r->got.len)
      abort();
    if (!call->streaming && call->body.len > call->body.max)
      abort();
  }
  call->ops->release(call);
  r->released = true;
}

static const struct mg_up_call_cbs cbs = {on_data, on_done};

static void on_closed(void *arg) { ((struct run *)arg)->closed = true; }

/* Feed the answer to one call; returns how it went in r. */
static void one(const uint8_t *ans, size_t n, unsigned flags, size_t step,
                size_t split, struct run *r) {
  static const char *const lines[] = {"Content-Type: application/json"};
  struct mg_up_engine_cfg cfg = {8, 0, 60000, NULL};
  struct mg_up_engine *e;
  struct mg_up_request q;
  uv_loop_t loop;
  char err[256];
  void *dest;
  int sv[2];
  size_t off = 0;

  memset(r, 0, sizeof(*r));
  r->flags = flags;
  mg_buf_init(&r->got, 1u << 24);
  mg_buf_init(&r->offered, 1u << 24);
  if (uv_loop_init(&loop) != 0)
    abort();
  e = mg_native_new(&loop, &cfg);
  if (e == NULL)
    abort();
  dest = mg_native_ops.dest_new(e, "http://127.0.0.1:1/v1", lines, 1, NULL,
                                err, sizeof(err));
  if (dest == NULL || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
      mg_native__adopt(e, dest, sv[0]) != 0)
    abort();
  memset(&q, 0, sizeof(q));
  q.dest = dest;
  q.method = (flags & 2) ? "HEAD" : "POST";
  q.body = (flags & 2) ? NULL : strdup("{}");
  q.body_len = q.body ? 2 : 0;
  q.timeouts = (struct mg_timeouts){60000, 60000, 60000, 60000};
  q.stream = (flags & 1) != 0;
  q.max_response = (flags & 8) ? 64 : (1u << 20);
  r->call = mg_native_ops.start(e, &q, &cbs, r);
  if (r->call == NULL)
    abort();

  while (!r->ndone && off < n) {
    size_t k = off == 0 && split ? split : (step ? step : n - off);
    if (k > n - off)
      k = n - off;
    if (k > MG_NATIVE__FEED_MAX)
      k = MG_NATIVE__FEED_MAX;
    if (mg_native__feed(r->call, (const char *)ans + off, k) != 0)
      abort();
    off += k;
    /* The exchange resumes from outside on_data (its client drained);
     * on_done of a call that ends inside resume() comes from the tick. */
    while (!r->ndone && r->held) {
      mg_native_ops.resume(r->call);
      uv_run(&loop, UV_RUN_NOWAIT);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (!r->ndone && (flags & 16)) {
    if (mg_native__feed_eof(r->call) != 0)
      abort();
    while (!r->ndone && r->held) {
      mg_native_ops.resume(r->call);
      uv_run(&loop, UV_RUN_NOWAIT);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (!r->ndone) {
    mg_native_ops.cancel(r->call);
    r->res = (enum mg_up_result)-1;
  }
  mg_native_ops.close(e, on_closed, r);
  while (!r->closed)
    uv_run(&loop, UV_RUN_ONCE);
  mg_native_ops.dest_free(dest);
  close(sv[1]);
  if (uv_loop_close(&loop) != 0)
    abort();
  if (r->ndone > 1)
    abort();
}

/* Do two runs of one answer end alike? */
static bool same_end(const struct run *a, const struct run *b, size_t n) {
  const struct run *ok = a->res == MG_UP_OK ? a : b;
  const struct run *bad = ok == a ? b : a;
  if (a->res == b->res && a->status == b->status &&
      a->streaming == b->streaming)
    return true;
  /* Bytes after a 204/205/304 head are its body when they arrive with it
   * (MG_UP_PROTOCOL), else bytes on an idle connection, which closes it:
   * never relayed either way. */
  if (ok->res == MG_UP_OK && bad->res == MG_UP_PROTOCOL &&
      ok->status == bad->status &&
      (ok->status == 204 || ok->status == 205 || ok->status == 304))
    return true;
  /* A head over the limit is judged per read. */
  return n >= MG_NATIVE_MAX_HEAD &&
         (a->res == MG_UP_PROTOCOL || b->res == MG_UP_PROTOCOL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct run a, b;
  unsigned flags;
  size_t step, split;
  if (size < 4)
    return 0;
  flags = data[0];
  step = data[1];
  split = (size_t)data[2] | (size_t)data[3] << 8;
  one(data + 4, size - 4, flags, step, split, &a);
  /* The same answer whole and unpaused ends the same way, with the same
   * body bytes: splits and pauses change nothing. (Not when on_data gives
   * up on its second piece: where pieces fall decides which that is.) */
  if (!(flags & 32)) {
    one(data + 4, size - 4, flags & ~4u, 0, 0, &b);
    if (!same_end(&a, &b, size - 4))
      abort();
    if (a.res == MG_UP_OK && b.res == MG_UP_OK &&
        (a.got.len != b.got.len ||
         (a.got.len && memcmp(a.got.data, b.got.data, a.got.len) != 0)))
      abort();
    mg_buf_free(&b.got);
    mg_buf_free(&b.offered);
  }
  mg_buf_free(&a.got);
  mg_buf_free(&a.offered);
  return 0;
}
