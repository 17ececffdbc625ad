/* native_int.h - what native.c (engine, pools, DNS, connections, requests)
 * and native_resp.c (answers: llhttp, headers, body, end of answer) share.
 * Not for anyone else. */
#ifndef MG_UP_NATIVE_INT_H
#define MG_UP_NATIVE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "upstream/native.h"

struct nat_engine;
struct nat_origin;
struct nat_conn;
struct nat_call;
struct nat_lookup;

/* A FIFO of calls (waiting for DNS, for a connection slot, or for their
 * on_done). A call is in at most one; call->q says which. */
struct nat_queue {
  struct nat_call *head, *tail; /* borrowed */
  size_t n;
};

/* One stored response header: offsets into call->hbytes. */
struct nat_hdr {
  uint32_t name, nlen, value, vlen;
};

enum nat_call_state {
  NC_FREE,        /* in the engine's pool of call structs */
  NC_WAIT_DNS,    /* in origin->dnsq */
  NC_WAIT_SLOT,   /* in origin->slotq: max_host_connections reached */
  NC_CONNECTING,  /* on a connection that is connecting */
  NC_SENT,        /* request (being) written, answer awaited or arriving */
  NC_DONE,        /* ended; on_done delivered or queued in e->doneq */
};

/* Where llhttp's status-code bytes are checked (native_resp.c): llhttp
 * 8.1 takes "0200" as 200, so the three digits are checked on the raw
 * bytes: offsets 9-11 of the status line are digits, 12 is SP or CR. */
#define NAT_SC_DONE 13

struct nat_call {
  struct mg_up_call pub;          /* first: the contract's part */
  struct nat_engine *e;           /* borrowed */
  const struct nat_dest *dest;    /* borrowed: the request's destination */
  struct nat_conn *conn;          /* borrowed while attached, or NULL */
  struct nat_queue *q;            /* the queue it is in, or NULL */
  struct nat_call *qprev, *qnext; /* links in q */
  struct nat_call *aprev, *anext; /* the engine's calls in progress */
  struct nat_call *next_free;     /* the engine's pool */
  uv_timer_t timer;               /* connect / first byte / idle / total */
  enum nat_call_state state;
  enum mg_up_result result;       /* what a queued on_done will say */
  char *head;                     /* owned: the request head, kept with its
                                   * capacity across calls */
  size_t head_len, head_cap;
  char *body;                     /* owned until written, or NULL */
  size_t body_len;
  uint64_t deadline_connect;      /* uv_now() milliseconds */
  uint64_t deadline_first;
  uint64_t deadline_total;
  uint64_t last_data;             /* the last body bytes (idle timeout) */
  uint32_t idle_ms;
  uint32_t connect_ms;            /* for messages */
  size_t addr0, tries;            /* addresses tried for this call */
  bool want_stream;               /* req->stream */
  bool head_method;               /* a HEAD request: answers have no body */
  /* The answer (reset per call; native_resp.c). */
  bool got_byte;      /* any answer byte arrived */
  bool msg_started;   /* a response message has begun and not ended */
  bool headers_done;  /* the final response's head is parsed */
  bool interim;       /* the message being parsed is a 1xx */
  bool interim_done;  /* a 1xx just ended: the next message starts */
  bool complete;      /* the final response ended */
  bool keep;          /* ... and allows the connection to be reused */
  bool got_data;      /* a body byte arrived */
  bool rearm;         /* the timer must switch to the idle deadline */
  bool paused;        /* on_data said MG_UP_PAUSE: bytes held */
  enum mg_up_result fail; /* set by a parser callback that stops parsing */
  uint8_t sc;         /* status-line bytes checked (NAT_SC_DONE: all) */
  uint8_t crlf_need;  /* bytes of the CRLF after chunk data still to see */
  uint8_t hstate;     /* 0, 1 in a field name, 2 in a value */
  size_t head_fed;    /* answer bytes given to llhttp before the head ended */
  struct mg_buf hbytes;           /* owned: header names and values */
  struct nat_hdr *hv;             /* owned: nh entries of hcap */
  size_t nh, hcap;
};

enum nat_conn_state { NK_CONNECTING, NK_ACTIVE, NK_IDLE, NK_CLOSING };

struct nat_conn {
  uv_tcp_t tcp;                  /* first: the handle's memory is ours */
  uv_connect_t creq;
  struct nat_engine *e;          /* borrowed */
  struct nat_origin *o;          /* counted reference */
  struct nat_call *call;         /* borrowed: the call it serves, or NULL */
  llhttp_t parser;
  enum nat_conn_state state;
  struct nat_conn *oprev, *onext; /* the origin's idle list (LIFO) */
  struct nat_conn *iprev, *inext; /* the engine's idle list (oldest first) */
  struct nat_conn *kprev, *knext; /* the engine's list of all connections */
  uint64_t idle_since;           /* uv_now() when it went idle */
  size_t addr_i;                 /* the origin address it connects to */
  unsigned writing;              /* uv_write requests in flight */
  bool reading;
  /* Held answer bytes of a paused call: pbuf[0..held) is the piece on_data
   * refused, pbuf[held..plen) what followed it. */
  char *pbuf;                    /* owned */
  size_t pcap, plen, held;
  const char *held_p;            /* the refused piece while parsing */
  const char *feed_end;          /* end of the bytes being parsed */
  bool parsing_pbuf;             /* ... which are in pbuf (resume) */
};

struct nat_dest {
  struct nat_origin *o;          /* counted reference */
  char *path;                    /* owned: "/v1/chat/completions?x=y" */
  size_t path_len;
  char *head;                    /* owned: "Host: h:p\r\n" + the constant
                                  * header lines, each with its CRLF */
  size_t head_len;
};

struct nat_origin {
  struct nat_origin *prev, *next; /* the engine's list */
  struct nat_engine *e;          /* borrowed; NULL once the engine closed */
  unsigned refs;                 /* dests + connections + lookups + pump */
  char *host;                    /* owned: name or literal, no brackets */
  char port[6];
  char *name;                    /* owned: "host:port" for messages */
  bool literal;                  /* an IP address: no DNS */
  bool resolving;
  bool pump_pending;             /* in e->pumpq */
  struct sockaddr_storage *addrs; /* owned: naddrs */
  size_t naddrs, good;           /* good: the address that last worked */
  uint64_t dns_expiry;           /* uv_now() */
  struct nat_conn *idle;         /* borrowed: most recently idle first */
  size_t nconns, nidle;
  struct nat_queue dnsq, slotq;
  struct nat_origin *pump_next;  /* in e->pumpq */
  struct nat_lookup *lookup;     /* borrowed: the lookup in flight */
};

struct nat_engine {
  struct mg_up_engine base;      /* first: what every engine begins
                                  * with (upstream/call.h) */
  uv_loop_t *loop;               /* borrowed */
  uint32_t max_idle, max_host, idle_ms;
  struct nat_origin *origins;    /* borrowed: each frees itself */
  struct nat_conn *idle_head, *idle_tail; /* borrowed: oldest first */
  size_t nidle;
  struct nat_conn *conns;        /* owned: every connection */
  struct nat_call *calls;        /* borrowed: calls in progress */
  _Atomic size_t nactive;        /* read by scrapes on other threads */
  struct nat_call *free;         /* owned: pooled call structs */
  size_t ncalls, nfree, pool_max; /* allocated, pooled, pool ceiling */
  struct nat_queue doneq;        /* on_done to deliver from the tick */
  struct nat_origin *pumpq;      /* origins whose slot queue may move */
  uv_timer_t sweep;              /* closes pooled connections idle too long */
  uv_idle_t tick;                /* deferred on_done and slot queues */
  char *rbuf;                    /* owned: every socket reads into it */
  unsigned depth;                /* inside start() or resume(): on_done
                                  * is queued, never called */
  _Atomic uint64_t paused_total; /* read by scrapes on other threads */
  struct mg_native_stats st;     /* the engine's thread only */
  unsigned pending;              /* close/lookup callbacks still to come */
  bool closing;
  void (*close_cb)(void *arg);
  void *close_arg;
};

#define NAT_RBUF MG_NATIVE__FEED_MAX

/* native_resp.c */
extern const llhttp_settings_t mg_native__settings;
/* Reset the answer state of a call for a new request. */
void mg_native__resp_reset(struct nat_call *c);
/* Parse n answer bytes at p (the engine's read buffer or k->pbuf). */
void mg_native__process(struct nat_conn *k, const char *p, size_t n);
/* The socket said EOF (UV_EOF) or failed (another negative status). */
void mg_native__eof(struct nat_conn *k, int status);

/* native.c */
/* End the call: the connection goes back to the pool (keep) or is closed,
 * the timer stops, and on_done runs now or from the tick (inside start()
 * and resume()). The call must not be touched after it. */
void mg_native__end(struct nat_call *c, enum mg_up_result res, bool keep);
/* Close k (the call it served, if any, was dealt with). */
void mg_native__conn_close(struct nat_conn *k);
/* Stop reading k's socket (a paused call) and start it again. */
void mg_native__read_stop(struct nat_conn *k);
void mg_native__read_start(struct nat_conn *k);
/* Re-arm the call's timer from its deadlines. */
void mg_native__arm(struct nat_call *c);

#endif
