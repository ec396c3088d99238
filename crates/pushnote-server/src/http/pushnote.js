/*! pushnote.js: the browser side of pushnote, over the stock SockJS client.
 *
 *   var push = new Pushnote("https://push.example.com/sockjs", {token: "…"});
 *   push.on("message", function (data) { … });          // notify_all and notify
 *   push.subscribe("news").bind("create", function (data) { … });
 *
 * A presence channel (presence-…, joined with a presence token) also knows who is in it:
 *
 *   var room = push.subscribe("presence-room-7", {token: "…"});
 *   room.bind("subscribed", function (members) { … });   // members: room.members
 *   room.bind("member_added", function (member) { … });  // member: {id, info}
 *   room.bind("member_removed", function (member) { … });
 *   room.members.count; room.members.me; room.members.get("42"); room.members.each(fn);
 *
 * After a reconnect the members are those the new join lists, and member_added and
 * member_removed fire only for who came and went meanwhile; if that join is refused (the
 * "error" event names the channel), member_removed fires for everyone listed.
 *
 * It reconnects with backoff and jitter as the close codes say, subscribes the user and every
 * channel again, fetches a fresh token when one expired, and, on a server that keeps history,
 * gives the page every message it missed while away, once and in order (docs/PROTOCOL.md §6).
 * No build step: load the SockJS client, then this file (served at <route>/pushnote.js).
 */
(function (root, factory) {
  "use strict";
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.Pushnote = factory();
}(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  // Close codes after which reconnecting cannot help (docs/PROTOCOL.md §7).
  var FINAL = { 3000: true, 3009: true, 3010: true, 3011: true };
  // Close codes after which the server wants fewer sessions: "server full", "too many new
  // sessions" (from this address, or this connection).
  var SERVER_FULL = { 3003: true, 3004: true };

  var DEFAULTS = {
    // The user's token: a string, or a function returning one or a promise of one. None: the
    // page receives broadcasts and its channels only.
    token: null,
    // Called when the server answers token_expired: returns a fresh token, or a promise of one.
    refreshToken: null,
    // Positions and recovery, on a server that keeps history (a --single server).
    recover: true,
    // A Storage (sessionStorage, localStorage) where positions survive a reload.
    storage: null,
    storageKey: "pushnote",
    // Reconnection: the first wait, the longest, and the wait after "server full" (3003) or
    // "too many new sessions" (3004). Each
    // wait is drawn between half and all of its bound.
    minDelay: 1000,
    maxDelay: 30000,
    fullDelay: 15000,
    // The SockJS constructor (default: the global one) and its options.
    SockJS: null,
    sockjsOptions: {}
  };

  function extend(target) {
    for (var i = 1; i < arguments.length; i++) {
      var source = arguments[i] || {};
      for (var k in source) {
        if (Object.prototype.hasOwnProperty.call(source, k)) target[k] = source[k];
      }
    }
    return target;
  }

  // A value, a function's value, or a promise's, handed to `then` (errors to `fail`).
  function resolve(value, then, fail) {
    try {
      if (typeof value === "function") value = value();
      if (value && typeof value.then === "function") value.then(then, fail);
      else then(value);
    } catch (e) {
      fail(e);
    }
  }

  function Emitter() {
    this._listeners = {};
  }
  Emitter.prototype.on = function (name, fn) {
    (this._listeners[name] = this._listeners[name] || []).push(fn);
    return this;
  };
  Emitter.prototype.off = function (name, fn) {
    var list = this._listeners[name] || [];
    this._listeners[name] = fn ? list.filter(function (f) { return f !== fn; }) : [];
    return this;
  };
  Emitter.prototype._fire = function (name) {
    var args = Array.prototype.slice.call(arguments, 1);
    var list = (this._listeners[name] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].apply(this, args);
      } catch (e) {
        // A listener's error is the page's, reported without stopping the others.
        setTimeout(function () { throw e; }, 0);
      }
    }
  };

  /**
   * The members of a presence channel, as the server last told them (docs/PROTOCOL.md §6,
   * "Presence"): `count`, `me` ({id, info}: this page's member), `get(id)` ({id, info}, or
   * null) and `each(fn)`, fn(member) for every member. A member is a user, listed once
   * however many sessions it has.
   */
  function Members() {
    this.reset();
  }
  /** Forgets every member. */
  Members.prototype.reset = function () {
    this._info = Object.create(null);
    this.count = 0;
    this.me = null;
  };
  Members.prototype.get = function (id) {
    return id in this._info ? { id: id, info: this._info[id] } : null;
  };
  Members.prototype.each = function (fn) {
    for (var id in this._info) fn({ id: id, info: this._info[id] });
  };
  // Lists `id` with `info`; true if it was not listed.
  Members.prototype._add = function (id, info) {
    var added = !(id in this._info);
    this._info[id] = info;
    if (added) this.count++;
    if (this.me && this.me.id === id) this.me = { id: id, info: info };
    return added;
  };
  // Takes `id` off the list; the member it was, or null if it was not listed.
  Members.prototype._remove = function (id) {
    var was = this.get(id);
    if (was) {
      delete this._info[id];
      this.count--;
    }
    return was;
  };

  // A member as the server sends it ({user, info}), or null if it is not one.
  function member(m) {
    return m && typeof m === "object" && typeof m.user === "string"
      ? { id: m.user, info: m.info === undefined ? null : m.info } : null;
  }

  /**
   * A channel the page is in: `bind(event, fn)` receives its events. A presence channel's
   * also has `members` (Members), and fires "subscribed" (members) on each join, the first
   * and those after a reconnect, "member_added" (member) and "member_removed" (member).
   */
  function Channel(push, name, options) {
    Emitter.call(this);
    this.name = name;
    this.subscribed = false;
    this._push = push;
    this._token = options.token || null;
    this._refreshToken = options.refreshToken || null;
    // Presence: whether the join of this connection was answered (what the server says of
    // members before that is not applied), and whether any join was (a join after it tells
    // the page what changed meanwhile).
    this.members = name.indexOf("presence-") === 0 ? new Members() : null;
    this._joined = false;
    this._listed = false;
  }
  Channel.prototype = Object.create(Emitter.prototype);
  Channel.prototype.bind = Channel.prototype.on;
  Channel.prototype.unbind = Channel.prototype.off;
  /** `fn(event, data, meta)` receives every event of the channel. */
  Channel.prototype.bind_all = function (fn) {
    return this.on("*", fn);
  };
  Channel.prototype._deliver = function (event, data, meta) {
    this._fire(event, data, meta);
    this._fire("*", event, data, meta);
  };
  Channel.prototype.unsubscribe = function () {
    this._push.unsubscribe(this.name);
  };
  // A presence channel's join answered: `data` lists its members. The first join's list is
  // taken as it is; a later one's (after a reconnect) replaces the list, and the page is told
  // who went and who came meanwhile, one at a time, as if it had never been away.
  Channel.prototype._present = function (data) {
    var members = this.members;
    var listed = this._listed;
    var now = Object.create(null);
    var list = Array.isArray(data.members) ? data.members : [];
    for (var i = 0; i < list.length; i++) {
      var m = member(list[i]);
      if (m) now[m.id] = m.info;
    }
    var me = member(data.me);
    if (me && !(me.id in now)) now[me.id] = me.info;
    var gone = [];
    members.each(function (m) {
      if (!(m.id in now)) gone.push(m.id);
    });
    this._joined = this._listed = true;
    members.me = me;
    for (var j = 0; j < gone.length; j++) {
      var was = members._remove(gone[j]);
      if (listed) this._fire("member_removed", was);
    }
    for (var id in now) {
      if (members._add(id, now[id]) && listed) this._fire("member_added", { id: id, info: now[id] });
    }
    this._fire("subscribed", members);
  };
  // A presence channel's change (`pushnote:presence`): `added` members ({user, info}), new or
  // with new info, and the user ids of the `removed`. Ignored before the join's answer.
  Channel.prototype._presence = function (data) {
    if (!this._joined) return;
    var removed = Array.isArray(data.removed) ? data.removed : [];
    var added = Array.isArray(data.added) ? data.added : [];
    for (var i = 0; i < removed.length; i++) {
      var gone = typeof removed[i] === "string" ? this.members._remove(removed[i]) : null;
      if (gone) this._fire("member_removed", gone);
    }
    for (var j = 0; j < added.length; j++) {
      var m = member(added[j]);
      if (m && this.members._add(m.id, m.info)) this._fire("member_added", m);
    }
  };
  // Out of the channel (the page left it, or the server says it did): no members are known.
  Channel.prototype._left = function () {
    this._joined = this._listed = false;
    if (this.members) this.members.reset();
  };
  // A join of this connection refused (after a reconnect: presence_full, forbidden…): the page
  // is out of the channel, and is told that everyone it listed went.
  Channel.prototype._refused = function () {
    if (this._joined || !this._listed) return;
    var gone = [];
    this.members.each(function (m) {
      gone.push(m);
    });
    this._left();
    for (var i = 0; i < gone.length; i++) this._fire("member_removed", gone[i]);
  };

  /**
   * Connects to the SockJS endpoint `url`. Events (`on(name, fn)`):
   * - "message" (data, meta): a broadcast or the user's message; meta.kind is "broadcast",
   *   "user" or, before positions are on, null; meta.position its position, if any.
   * - "state" (change): change.state is "connecting", "open", "reconnecting" (with
   *   change.delay in ms), "closed" (close() was called) or "stopped" (a close code after
   *   which reconnecting cannot help); change.code and change.reason say why it closed.
   * - "subscribed" (reply data), "unsubscribed" (reply data).
   * - "lost" (topic, reason): what the page missed of a topic could not be given
   *   ("evicted", "epoch", "future", "unavailable", "busy", "no_history"); fetch its current state from the app.
   * - "error" (data): an error answer of the server ({code, message[, channel]}).
   */
  function Pushnote(url, options) {
    if (!(this instanceof Pushnote)) return new Pushnote(url, options);
    Emitter.call(this);
    this.url = url;
    this.options = extend({}, DEFAULTS, options);
    this.state = "connecting";
    this.channels = {};
    this._sock = null;
    this._attempt = 0;
    this._timer = null;
    this._closed = false;
    this._token = this.options.token;
    this._last = this._load();
    this._asked = false;
    this._positions = false;
    this._recovering = false;
    this._ready = false;
    this._refreshing = {};
    this._connect();
  }
  Pushnote.prototype = Object.create(Emitter.prototype);

  /**
   * Sends `{"name": name, "data": data}`, as the original pushnote's emit, with `"replies":
   * true` in an object `data`: the server answers the requests of this library, which pages
   * written for the original do not get (docs/PROTOCOL.md §6). False if closed.
   */
  Pushnote.prototype.emit = function (name, data) {
    if (!this._sock || this.state !== "open") return false;
    if (data === undefined || data === null) data = { replies: true };
    else if (typeof data === "object" && !Array.isArray(data)) data = extend({}, data, { replies: true });
    this._sock.send(JSON.stringify({ name: name, data: data }));
    return true;
  };

  /** Subscribes as the user of `token` (moving from another user), now and on every reconnect. */
  Pushnote.prototype.setToken = function (token) {
    this._token = token;
    delete this._last.user;
    this._save();
    if (this.state === "open") this._subscribeUser(null);
  };

  /** Stops the user's messages (broadcasts and channels go on). */
  Pushnote.prototype.clearToken = function () {
    this._token = null;
    delete this._last.user;
    this._save();
    this.emit("unsubscribe");
  };

  /**
   * Joins `name` (a private channel needs options.token, a presence channel a presence
   * token, and either may give options.refreshToken), now and on every reconnect; returns
   * the channel, to bind its events.
   */
  Pushnote.prototype.subscribe = function (name, options) {
    var channel = this.channels[name];
    if (!channel) {
      channel = this.channels[name] = new Channel(this, name, options || {});
      if (this.state === "open" && !this._recovering && this._ready) this._subscribeChannel(channel);
    }
    return channel;
  };

  /** Leaves channel `name`. */
  Pushnote.prototype.unsubscribe = function (name) {
    if (!this.channels[name]) return;
    this.channels[name]._left();
    delete this.channels[name];
    delete this._last["channel:" + name];
    this._save();
    this.emit("unsubscribe", { channel: name });
  };

  Pushnote.prototype.channel = function (name) {
    return this.channels[name] || null;
  };

  /** Closes the connection for good. */
  Pushnote.prototype.close = function () {
    this._closed = true;
    clearTimeout(this._timer);
    if (this._sock) this._sock.close(3000, "Go away!");
    else this._setState({ state: "closed" });
  };

  Pushnote.prototype._setState = function (change) {
    this.state = change.state;
    this._fire("state", change);
  };

  Pushnote.prototype._load = function () {
    var storage = this.options.storage;
    try {
      var saved = storage && JSON.parse(storage.getItem(this.options.storageKey) || "{}");
      return saved && typeof saved === "object" ? saved : {};
    } catch (e) {
      return {};
    }
  };

  Pushnote.prototype._save = function () {
    var storage = this.options.storage;
    try {
      if (storage) storage.setItem(this.options.storageKey, JSON.stringify(this._last));
    } catch (e) {
      // Full or forbidden storage: positions live as long as the page.
    }
  };

  Pushnote.prototype._connect = function () {
    var SockJS = this.options.SockJS || (typeof window !== "undefined" && window.SockJS);
    if (!SockJS) throw new Error("pushnote.js needs the SockJS client: load it first");
    var self = this;
    this._asked = false;
    this._positions = false;
    this._recovering = false;
    this._ready = false;
    this._refreshing = {};
    // A presence channel applies changes again once its join on the new connection is answered.
    for (var name in this.channels) {
      if (Object.prototype.hasOwnProperty.call(this.channels, name)) {
        this.channels[name]._joined = false;
      }
    }
    this._setState({ state: "connecting" });
    var sock = this._sock = new SockJS(this.url, null, this.options.sockjsOptions);
    sock.onopen = function () {
      if (sock !== self._sock) return;
      self._setState({ state: "open", transport: sock.transport });
      if (self.options.recover) {
        // Subscribes wait for the answer: their `since` needs positions on.
        var since = self._last.broadcast;
        self._asked = true;
        self._recovering = !!since;
        self.emit("positions", since ? { since: since } : undefined);
      } else {
        self._subscribeAll();
      }
    };
    sock.onmessage = function (e) {
      if (sock === self._sock) self._receive(e.data);
    };
    sock.onclose = function (e) {
      if (sock !== self._sock) return;
      self._sock = null;
      self._onClose(e.code, e.reason);
    };
  };

  Pushnote.prototype._onClose = function (code, reason) {
    var opened = this.state === "open";
    if (this._closed) return this._setState({ state: "closed", code: code, reason: reason });
    if (FINAL[code]) return this._setState({ state: "stopped", code: code, reason: reason });
    if (opened && !SERVER_FULL[code]) this._attempt = 0;
    var o = this.options;
    var bound = Math.min(o.maxDelay, o.minDelay * Math.pow(2, this._attempt));
    if (SERVER_FULL[code]) bound = Math.max(bound, o.fullDelay);
    this._attempt = Math.min(this._attempt + 1, 30);
    var delay = Math.round(bound / 2 + Math.random() * bound / 2);
    var self = this;
    this._setState({ state: "reconnecting", code: code, reason: reason, delay: delay });
    this._timer = setTimeout(function () { self._connect(); }, delay);
  };

  Pushnote.prototype._subscribeAll = function () {
    this._ready = true;
    if (this._token) this._subscribeUser(this._positions ? this._last.user : null);
    for (var name in this.channels) {
      if (Object.prototype.hasOwnProperty.call(this.channels, name)) {
        this._subscribeChannel(this.channels[name]);
      }
    }
  };

  Pushnote.prototype._withSince = function (data, since) {
    if (this._positions && since) data.since = since;
    return data;
  };

  Pushnote.prototype._subscribeUser = function (since) {
    var self = this;
    resolve(this._token, function (token) {
      if (token && self.state === "open") self.emit("subscribe", self._withSince({ token: token }, since));
    }, function (e) {
      self._fire("error", { code: "token_unavailable", message: String(e) });
    });
  };

  Pushnote.prototype._subscribeChannel = function (channel) {
    var self = this;
    var since = this._last["channel:" + channel.name];
    var send = function (token) {
      if (self.state !== "open" || self.channels[channel.name] !== channel) return;
      var data = self._withSince({ channel: channel.name }, since);
      if (token) data.token = token;
      self.emit("subscribe", data);
    };
    if (!channel._token) return send(null);
    resolve(channel._token, send, function (e) {
      self._fire("error", { code: "token_unavailable", message: String(e), channel: channel.name });
    });
  };

  // A fresh token for the user (no channel) or a channel, once at a time, then subscribes again.
  Pushnote.prototype._refresh = function (channelName) {
    var key = channelName === undefined ? "" : "channel:" + channelName;
    var channel = channelName === undefined ? null : this.channels[channelName];
    var refresh = channel ? channel._refreshToken : this.options.refreshToken;
    if (!refresh || this._refreshing[key]) return false;
    this._refreshing[key] = true;
    var self = this;
    resolve(refresh, function (token) {
      if (channel) {
        channel._token = token;
        self._subscribeChannel(channel);
      } else {
        self._token = token;
        self._subscribeUser(self._positions ? self._last.user : null);
      }
    }, function (e) {
      self._fire("error", { code: "token_unavailable", message: String(e), channel: channelName });
    });
    return true;
  };

  Pushnote.prototype._topicOf = function (reply) {
    if (reply.channel !== undefined) return "channel:" + reply.channel;
    if (reply.user !== undefined) return "user";
    return null;
  };

  // Notes a topic's position from a reply, and tells the page if it was not recovered.
  Pushnote.prototype._answered = function (topic, data) {
    if (!topic) return;
    if (data.position) this._last[topic] = data.position;
    if (data.recovered === false) this._fire("lost", topic, data.reason);
    this._save();
  };

  Pushnote.prototype._receive = function (m) {
    var name = m && typeof m === "object" && typeof m.name === "string" ? m.name : null;
    if (name && name.indexOf("pushnote:") === 0) return this._reply(name, m.data || {});
    // Positioned messages may come before the answer to `positions`: the history's first.
    if (this._asked && m && typeof m === "object" && m.position && m.kind) {
      return this._positioned(m);
    }
    if (this._recovering) return; // a bare broadcast the history gives again
    var channel = m && typeof m === "object" && typeof m.channel === "string" && "event" in m
      ? this.channels[m.channel] : null;
    if (channel) channel._deliver(m.event, m.data, { channel: m.channel, event: m.event, position: null });
    else this._fire("message", m, { kind: null, position: null });
  };

  Pushnote.prototype._positioned = function (m) {
    var topic = m.kind === "channel" ? "channel:" + m.channel : m.kind;
    var last = this._last[topic];
    // Within an epoch, an offset at or before the last one was had already.
    if (last && last.epoch === m.position.epoch && m.position.offset <= last.offset) return;
    this._last[topic] = m.position;
    this._save();
    if (m.kind === "channel") {
      var channel = this.channels[m.channel];
      if (channel) channel._deliver(m.event, m.data, { channel: m.channel, event: m.event, position: m.position });
    } else {
      this._fire("message", m.data, { kind: m.kind, position: m.position });
    }
  };

  Pushnote.prototype._reply = function (name, data) {
    if (name === "pushnote:positions") {
      this._positions = true;
      this._recovering = false;
      this._answered("broadcast", data);
      return this._subscribeAll();
    }
    if (name === "pushnote:subscribed") {
      var channel = data.channel !== undefined ? this.channels[data.channel] : null;
      if (channel) channel.subscribed = true;
      delete this._refreshing[data.channel !== undefined ? "channel:" + data.channel : ""];
      this._answered(this._topicOf(data), data);
      this._fire("subscribed", data);
      if (channel && channel.members) channel._present(data);
      return;
    }
    if (name === "pushnote:presence") {
      var room = typeof data.channel === "string" ? this.channels[data.channel] : null;
      if (room && room.members) room._presence(data);
      return;
    }
    if (name === "pushnote:unsubscribed") {
      var left = typeof data.channel === "string" ? this.channels[data.channel] : null;
      if (left && left._joined) left._left();
      return this._fire("unsubscribed", data);
    }
    if (name !== "pushnote:error") return;
    if (data.code === "no_history") {
      // This server keeps no history: what the page missed cannot be given.
      if (this._recovering) this._fire("lost", "broadcast", "no_history");
      this._asked = false;
      this._recovering = false;
      return this._subscribeAll();
    }
    if (data.code === "token_expired" && this._refresh(data.channel)) return;
    var refused = typeof data.channel === "string" ? this.channels[data.channel] : null;
    if (refused && refused.members) refused._refused();
    this._fire("error", data);
  };

  Pushnote.defaults = DEFAULTS;
  return Pushnote;
}));
