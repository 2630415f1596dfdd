/*
 * iocluster browser helper, served by iocluster-frontend as /iocluster.js.
 * Needs the stock socket.io-client (served as /socket.io.min.js) loaded first.
 *
 *   const conn = iocluster.connect({ namespace: "/", auth: { nickname: "ann" } });
 *   conn.on("message", (msg) => ...);          // kept across fail-overs
 *   conn.emit("message", { text: "hi" });      // goes to the current socket
 *   conn.onStatus((s) => console.log(s.state, s.node));
 *
 * It reads the live io-nodes from /config.json (least loaded first), connects
 * to one, and when that connection fails or the io-node goes away it picks
 * another live node (re-reading the list) with exponential backoff and
 * jitter. It keeps one socket throughout, so with connection state recovery
 * on (the app-nodes' `recovery_ms`) a fail-over keeps the socket's id, rooms
 * and data and delivers what was sent meanwhile (`conn.recovered`). A
 * server-side disconnect (the application kicked the socket) is final, as
 * with socket.io-client itself.
 */
(function (global) {
  "use strict";

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function readConfig(url) {
    return fetch(url, { cache: "no-store" }).then(function (response) {
      if (!response.ok) throw new Error("config: HTTP " + response.status);
      return response.json();
    });
  }

  function connect(options) {
    options = options || {};
    var io = options.io || global.io;
    if (!io) throw new Error("iocluster.js: load /socket.io.min.js first");
    var namespace = options.namespace || "/";
    var configUrl = options.configUrl || "/config.json";
    var minDelay = options.minDelay || 500;
    var maxDelay = options.maxDelay || 10000;
    var handlers = [];
    var statusHandlers = [];
    var closed = false;
    var socket = null;
    var failures = 0;
    var avoid = null;

    var conn = {
      socket: null,
      node: null,
      /** Whether the last connect recovered the session (Socket.IO's
       * connection state recovery, when the application turned it on). */
      recovered: false,
      state: "connecting",
      /** Registers a handler on the current socket and on every later one. */
      on: function (event, handler) {
        handlers.push([event, handler]);
        if (socket) socket.on(event, handler);
        return conn;
      },
      emit: function () {
        if (!socket || !socket.connected) throw new Error("iocluster: not connected");
        return socket.emit.apply(socket, arguments);
      },
      emitWithAck: function () {
        if (!socket || !socket.connected) return Promise.reject(new Error("iocluster: not connected"));
        return socket.emitWithAck.apply(socket, arguments);
      },
      onStatus: function (handler) {
        statusHandlers.push(handler);
        return conn;
      },
      close: function () {
        closed = true;
        if (socket) socket.close();
        status("closed", conn.node);
      },
    };

    function status(state, node, detail) {
      conn.state = state;
      conn.node = node;
      var info = { state: state, node: node, failures: failures, detail: detail };
      statusHandlers.forEach(function (handler) {
        try { handler(info); } catch (e) { console.error(e); }
      });
    }

    function pick(nodes) {
      // Least loaded first (the list is sorted); skip the node that just
      // failed when there is another.
      var usable = nodes.filter(function (node) { return node.id !== avoid; });
      return (usable.length ? usable : nodes)[0];
    }

    function attempt() {
      if (closed) return;
      status("connecting", null);
      readConfig(configUrl)
        .then(function (config) {
          var node = pick(config.nodes || []);
          if (!node) throw new Error("no live io-node");
          open(node);
        })
        .catch(function (error) { retry(null, error.message); });
    }

    // One socket for the whole life of the connection: on fail-over only
    // its Manager's address changes, so socket.io-client keeps the socket's
    // private id and last offset and the new io-node can recover its
    // session (same id, rooms, data, and the messages it missed: see
    // `conn.recovered`).
    var current = null;

    function open(node) {
      current = node;
      var base = node.url.replace(/\/$/, "");
      if (socket) {
        socket.io.uri = base;
        socket.connect();
        return;
      }
      var s = io(base + namespace, {
        reconnection: false,
        forceNew: true,
        auth: options.auth,
        query: options.query,
        transports: options.transports,
        timeout: options.timeout || 10000,
      });
      socket = s;
      conn.socket = s;
      handlers.forEach(function (pair) { s.on(pair[0], pair[1]); });
      s.on("connect", function () {
        failures = 0;
        avoid = null;
        conn.recovered = !!s.recovered;
        status("connected", current.id, s.recovered ? "recovered" : undefined);
      });
      s.on("connect_error", function (error) {
        if (closed) return;
        // The node could not be reached, or no app-node answered in time:
        // try another. Anything else is the application refusing the
        // connection (auth), which another node would refuse too.
        var message = (error && error.message) || "";
        var transient = (error && error.type === "TransportError") ||
          /^(timeout|websocket error|xhr poll error|xhr post error|Connection timeout)$/.test(message);
        if (!transient) {
          status("refused", current.id, message);
          return;
        }
        retry(current.id, error && error.message);
      });
      s.on("disconnect", function (reason) {
        if (closed) return;
        if (reason === "io server disconnect" || reason === "io client disconnect") {
          status("disconnected", current.id, reason);
          return;
        }
        retry(current.id, reason);
      });
    }

    function retry(nodeId, detail) {
      if (closed) return;
      failures += 1;
      avoid = nodeId;
      status("failing-over", nodeId, detail);
      var ceiling = Math.min(maxDelay, minDelay * Math.pow(2, failures - 1));
      var delay = ceiling / 2 + Math.random() * ceiling / 2;
      sleep(failures === 1 && nodeId ? 0 : delay).then(attempt);
    }

    attempt();
    return conn;
  }

  global.iocluster = { connect: connect };
})(typeof window !== "undefined" ? window : globalThis);
