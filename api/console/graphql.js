// The console's only way to the server: the public GraphQL API, `POST /graphql`
// for queries and mutations, and `/graphql/ws` (graphql-transport-ws) for
// subscriptions, all subscriptions of a page on one socket.

/** A refusal of the whole request (a bad token, a forbidden action): its message and code. */
export class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
    this.socket = null;
    this.ready = false;
    this.subscriptions = new Map();
    this.nextId = 1;
    this.retry = 0;
    this.onConnection = () => {};
  }

  /** Runs one query or mutation; its `data`, or an `ApiError` with the server's message. */
  async request(query, variables = {}) {
    let response;
    try {
      response = await fetch("/graphql", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.token}` },
        body: JSON.stringify({ query, variables }),
      });
    } catch (e) {
      throw new ApiError(`the server did not answer (${e.message})`, "NETWORK", 0);
    }
    let body;
    try {
      body = await response.json();
    } catch {
      throw new ApiError(`the server answered ${response.status} without JSON`, "INTERNAL", response.status);
    }
    if (body.errors && body.errors.length) {
      const [first] = body.errors;
      throw new ApiError(first.message, first.extensions?.code ?? "ERROR", response.status);
    }
    return body.data;
  }

  /**
   * Subscribes; `variables()` is asked again at each (re)subscription, so a
   * follower resumes from its last cursor after the socket dropped. `next(data)`
   * gets each result, `complete()` the end, `error(ApiError)` a refusal.
   * Returns a function that unsubscribes.
   */
  subscribe(query, variables, { next, complete = () => {}, error = () => {} }) {
    const id = String(this.nextId++);
    const sub = { id, query, variables, next, complete, error };
    this.subscriptions.set(id, sub);
    if (this.ready) this.send(sub);
    else this.connect();
    return () => {
      if (this.subscriptions.delete(id) && this.ready) this.socket.send(JSON.stringify({ id, type: "complete" }));
    };
  }

  send(sub) {
    this.socket.send(JSON.stringify({ id: sub.id, type: "subscribe", payload: { query: sub.query, variables: sub.variables() } }));
  }

  connect() {
    if (this.socket) return;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql/ws`;
    const socket = new WebSocket(url, "graphql-transport-ws");
    this.socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${this.token}` } }));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const sub = this.subscriptions.get(message.id);
      if (message.type === "connection_ack") {
        this.ready = true;
        this.retry = 0;
        this.onConnection(true);
        for (const s of this.subscriptions.values()) this.send(s);
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next" && sub) {
        if (message.payload.errors?.length) {
          const [first] = message.payload.errors;
          this.subscriptions.delete(message.id);
          sub.error(new ApiError(first.message, first.extensions?.code ?? "ERROR", 200));
        } else {
          sub.next(message.payload.data);
        }
      } else if (message.type === "error" && sub) {
        this.subscriptions.delete(message.id);
        sub.error(new ApiError(message.payload?.[0]?.message ?? "subscription refused", "ERROR", 200));
      } else if (message.type === "complete" && sub) {
        this.subscriptions.delete(message.id);
        sub.complete();
      }
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      this.onConnection(false, event.reason);
      // A refused token (1002 or 44xx) is final; anything else is a dropped
      // connection, opened again with backoff while anything is subscribed.
      if (event.code === 1002 || (event.code >= 4400 && event.code < 4500)) {
        for (const sub of this.subscriptions.values()) sub.error(new ApiError(event.reason || "connection refused", "UNAUTHENTICATED", 401));
        this.subscriptions.clear();
        return;
      }
      if (this.subscriptions.size) {
        const delay = Math.min(5000, 200 * 2 ** this.retry++);
        setTimeout(() => this.connect(), delay);
      }
    };
  }

  /** Drops the socket as a network failure would (a test hook: subscriptions resume). */
  dropConnection() {
    if (this.socket) this.socket.close(4000, "dropped on purpose");
  }

  close() {
    this.subscriptions.clear();
    const socket = this.socket;
    this.socket = null;
    this.ready = false;
    if (socket) socket.close(1000, "page left");
  }
}
