/* exchange.h - one proxied request, from its parsed body to its answer and
 * its record. The exchange owns itself: it ends (and frees itself) once the
 * answer is queued, or once its client is gone and its upstream call is
 * cancelled. */
#ifndef MG_EXCHANGE_H
#define MG_EXCHANGE_H

struct mg_server;
struct mg_conn;
struct mg_exchange;

/* Start answering the connection's current request (endpoint is an enum
 * mg_endpoint). The exchange takes the request body. */
void mg_exchange_start(struct mg_server *srv, struct mg_conn *c, int endpoint);

/* The client went away: stop upstream work and finish without answering.
 * Safe from anywhere, including inside the exchange's own calls. */
void mg_exchange_client_gone(struct mg_exchange *ex);

/* The connection's write queue fell below the low watermark. */
void mg_exchange_drained(struct mg_exchange *ex);

/* Shutdown grace is over: end now with a 503 if nothing was sent yet. */
void mg_exchange_abort(struct mg_exchange *ex);

#endif
