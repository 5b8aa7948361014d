// switchboard web console.
//
// Plain JavaScript with no build step and no dependencies: the console is
// the plan B for when Slack (and maybe the internet) is down.
//
// Everything on the page comes from the event stream of the CHAT stream;
// the only local state is what this browser has typed but not yet seen
// echoed. All text from the server is inserted with textContent or text
// nodes, never as HTML.
'use strict';

(() => {
  const KEY_USER = 'switchboard.console.user';
  const KEY_CHANNELS = 'switchboard.console.channels';
  const KEY_SENT = 'switchboard.console.sent';
  const CHANNEL_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
  const MAX_TEXT_BYTES = 4000;
  const MAX_USER_BYTES = 64;
  const MAX_SENT = 50;

  const REACTIONS = {
    REACTION_ACCEPTED: { emoji: '👀', word: 'running', title: 'Accepted, running', cls: 'badge-accepted', rank: 1 },
    REACTION_SUCCEEDED: { emoji: '✅', word: 'succeeded', title: 'Succeeded', cls: 'badge-succeeded', rank: 2 },
    REACTION_FAILED: { emoji: '❌', word: 'failed', title: 'Failed', cls: 'badge-failed', rank: 2 },
  };

  const $ = (id) => document.getElementById(id);
  const dom = {
    channelList: $('channel-list'),
    openForm: $('open-channel'),
    openInput: $('open-channel-name'),
    openError: $('open-channel-error'),
    meName: $('me-name'),
    changeName: $('change-name'),
    channelName: $('channel-name'),
    conn: $('conn-status'),
    log: $('messages'),
    empty: $('empty'),
    jump: $('jump'),
    composer: $('composer'),
    label: $('composer-label'),
    input: $('composer-text'),
    send: $('send'),
    error: $('composer-error'),
    target: $('thread-target'),
    targetText: $('thread-target-text'),
    targetCancel: $('thread-cancel'),
    dialog: $('name-dialog'),
    nameForm: $('name-form'),
    nameInput: $('name-input'),
    nameError: $('name-error'),
    nameCancel: $('name-cancel'),
  };

  const state = {
    user: '',
    trusted: false,
    serverChannels: [],
    opened: loadJSON(KEY_CHANNELS, []).filter((c) => CHANNEL_RE.test(c)),
    channel: '',
    es: null,
    retryTimer: 0,
    retryDelay: 1000,
    lastSeq: 0,
    synced: false,
    everSynced: false,
    stick: true,
    roots: new Map(), // id of a top-level post -> root record
    badges: new Map(), // post id -> element that holds its status badge
    reactions: new Map(), // post id -> strongest reaction seen
    progress: new Map(), // thread + job id -> { node, seq }
    finished: new Set(), // thread + job id of jobs that posted their result
    pending: new Map(), // message id -> { msg, node } until its echo arrives
    blobs: [], // object URLs of this channel, revoked when leaving it
    lastDay: '',
    target: null, // { id, label } while replying in a thread
    sent: loadJSON(KEY_SENT, []).filter((s) => typeof s === 'string'),
    recall: -1,
    localSeq: 0,
  };

  // ---------- small helpers ----------

  function loadJSON(key, fallback) {
    try {
      const v = JSON.parse(localStorage.getItem(key));
      return Array.isArray(fallback) && !Array.isArray(v) ? fallback : (v ?? fallback);
    } catch {
      return fallback;
    }
  }

  function save(key, value) {
    try {
      localStorage.setItem(key, typeof value === 'string' ? value : JSON.stringify(value));
    } catch {
      // Private mode or full storage: the console still works, it just forgets.
    }
  }

  function load(key) {
    try {
      return localStorage.getItem(key) || '';
    } catch {
      return '';
    }
  }

  // h builds an element. Children that are strings become text nodes, so
  // nothing from the server is ever parsed as HTML.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  const utf8 = new TextEncoder();
  const byteLength = (s) => utf8.encode(s).length;

  // newId returns a UUID. crypto.randomUUID exists only in secure contexts
  // (https or localhost); behind a plain-http proxy fall back to
  // getRandomValues, which is available everywhere.
  function newId() {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const x = Array.from(b, (n) => n.toString(16).padStart(2, '0')).join('');
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }

  function validUser(name) {
    if (!name) return 'Please enter a name.';
    if (byteLength(name) > MAX_USER_BYTES) return 'That name is too long (64 bytes at most).';
    if (/\p{Cc}/u.test(name)) return 'Control characters are not allowed.';
    return '';
  }

  function safeURL(u) {
    if (typeof u !== 'string' || u === '') return '';
    try {
      const url = new URL(u, location.href);
      return ['http:', 'https:', 'mailto:'].includes(url.protocol) ? url.href : '';
    } catch {
      return '';
    }
  }

  // ---------- time ----------

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
  const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric', year: 'numeric' });

  function parseTime(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function timeEl(d) {
    if (!d) return null;
    return h('time', { datetime: d.toISOString(), title: fullFmt.format(d) }, timeFmt.format(d));
  }

  function dayKey(d) {
    return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
  }

  function dayLabel(d) {
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(d) === dayKey(today)) return 'Today';
    if (dayKey(d) === dayKey(yesterday)) return 'Yesterday';
    return dayFmt.format(d);
  }

  // ---------- people ----------

  function authorName(p) {
    const a = p.author || {};
    return a.name || a.id || 'switchboard';
  }

  function avatar(name, small) {
    const words = name.replace(/^[^\p{L}\p{N}]+/u, '').split(/[\s._@-]+/).filter(Boolean);
    const initials = (words.length > 1 ? words[0][0] + words[1][0] : (words[0] || '?').slice(0, 2)).toUpperCase();
    let hash = 0;
    for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    const el = h('div', { class: small ? 'avatar avatar-small' : 'avatar', 'aria-hidden': 'true' }, initials);
    el.style.background = `hsl(${hash % 360} 52% 42%)`;
    return el;
  }

  // ---------- rendering post content ----------

  // Inline markup services use: Slack-style <url|label>, [label](url),
  // bare URLs, `code`, *bold* and **bold**.
  const INLINE = new RegExp([
    /<(https?:\/\/[^\s|>]+|mailto:[^\s|>]+)(?:\|([^>\n]+))?>/.source,
    /\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/.source,
    /(https?:\/\/[^\s<>"]*[^\s<>".,;:!?)\]'])/.source,
    /`([^`\n]+)`/.source,
    /(?<![\w*])\*\*(?=\S)([^*\n]*?\S)\*\*(?![\w*])/.source,
    /(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])/.source,
  ].join('|'), 'gu');

  function link(url, label) {
    const href = safeURL(url);
    if (!href) return document.createTextNode(label || url || '');
    return h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, label || url);
  }

  function inline(text) {
    const frag = document.createDocumentFragment();
    let i = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > i) frag.append(text.slice(i, m.index));
      if (m[1]) frag.append(link(m[1], m[2] || m[1].replace(/^mailto:/, '')));
      else if (m[3]) frag.append(link(m[4], m[3]));
      else if (m[5]) frag.append(link(m[5], m[5]));
      else if (m[6]) frag.append(h('code', null, m[6]));
      else if (m[7]) frag.append(h('strong', null, m[7]));
      else if (m[8]) frag.append(h('strong', null, m[8]));
      i = m.index + m[0].length;
    }
    if (i < text.length) frag.append(text.slice(i));
    return frag;
  }

  // richText renders text with ``` fences as preformatted blocks.
  function richText(text) {
    const frag = document.createDocumentFragment();
    const fence = /```(?:[\w+-]*\n)?([\s\S]*?)```\n?/g;
    let i = 0;
    for (const m of text.matchAll(fence)) {
      const before = text.slice(i, m.index).replace(/\n$/, '');
      if (before) frag.append(inline(before));
      frag.append(h('pre', null, h('code', null, m[1].replace(/\n$/, ''))));
      i = m.index + m[0].length;
    }
    if (i < text.length) frag.append(inline(text.slice(i)));
    return frag;
  }

  function renderBlock(b) {
    if (typeof b.markdown === 'string') return h('div', { class: 'block block-md' }, richText(b.markdown));
    if (typeof b.code === 'string') return h('pre', { class: 'block block-code' }, h('code', null, b.code));
    if (b.fields) {
      const rows = (b.fields.items || []).map((f) =>
        h('tr', null, h('th', { scope: 'row' }, f.title || ''), h('td', null, inline(f.value || ''))));
      return h('table', { class: 'block fields' }, h('tbody', null, rows));
    }
    if (b.link) return h('div', { class: 'block' }, link(b.link.url, b.link.label || b.link.url));
    return null;
  }

  function base64Bytes(data) {
    const bin = atob(data.replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  function renderAttachment(a) {
    const type = String(a.contentType || '').toLowerCase();
    const name = a.name || a.title || 'attachment';
    const isImage = /^image\/[a-z0-9.+-]+$/.test(type);
    if (isImage) {
      let src = '';
      if (a.data) src = `data:${type};base64,${a.data.replace(/-/g, '+').replace(/_/g, '/')}`;
      else src = safeURL(a.url);
      if (!src) return null;
      const img = h('img', { src, alt: a.title || a.name || 'image attachment', loading: a.data ? null : 'lazy' });
      img.addEventListener('load', keepAtBottom);
      // A data: URL cannot be opened in a new tab, so only linked images link.
      const pic = a.data ? img : h('a', { href: src, target: '_blank', rel: 'noopener noreferrer' }, img);
      return h('figure', { class: 'attachment-image' }, pic, h('figcaption', null, a.title || name));
    }
    let href = '';
    if (a.data) {
      try {
        href = URL.createObjectURL(new Blob([base64Bytes(a.data)], { type: type || 'application/octet-stream' }));
        state.blobs.push(href);
      } catch {
        return h('span', { class: 'attachment-file' }, `${name} (unreadable)`);
      }
    } else {
      href = safeURL(a.url);
    }
    if (!href) return null;
    return h('a', {
      class: 'attachment-file', href, download: name, title: a.title || null,
      target: a.data ? null : '_blank', rel: 'noopener noreferrer',
    }, name);
  }

  // content renders a post's blocks (or its text when it has none) and its
  // attachments.
  function content(p) {
    const frag = document.createDocumentFragment();
    const blocks = Array.isArray(p.blocks) ? p.blocks.map(renderBlock).filter(Boolean) : [];
    const body = h('div', { class: 'body' });
    if (blocks.length) body.append(...blocks);
    else body.append(richText(p.text || ''));
    frag.append(body);
    const files = Array.isArray(p.attachments) ? p.attachments.map(renderAttachment).filter(Boolean) : [];
    if (files.length) frag.append(h('div', { class: 'attachments' }, files));
    return frag;
  }

  function kindClass(p) {
    return 'kind-' + String(p.kind || 'KIND_UNSPECIFIED').replace(/^KIND_/, '').toLowerCase();
  }

  // ---------- badges ----------

  function badge(reaction) {
    const r = REACTIONS[reaction];
    return h('span', { class: `badge ${r.cls}`, title: r.title, 'data-reaction': reaction },
      h('span', { 'aria-hidden': 'true' }, r.emoji), r.word);
  }

  function showBadge(id) {
    const holder = state.badges.get(id);
    const reaction = state.reactions.get(id);
    if (!holder || !reaction) return;
    holder.querySelector('.badge')?.remove();
    holder.append(badge(reaction));
  }

  function react(id, reaction) {
    const r = REACTIONS[reaction];
    if (!r || !id) return;
    const prev = REACTIONS[state.reactions.get(id)];
    // Posts of one job arrive in order, but a slow replica's "accepted"
    // must never hide the outcome.
    if (prev && prev.rank > r.rank) return;
    state.reactions.set(id, reaction);
    showBadge(id);
  }

  // ---------- top-level messages and their threads ----------

  function addDaySeparator(d) {
    const key = dayKey(d);
    if (key === state.lastDay) return;
    state.lastDay = key;
    dom.log.append(h('div', { class: 'day', role: 'separator' }, h('span', null, dayLabel(d))));
  }

  function newRoot(id, when) {
    addDaySeparator(when || new Date());
    const root = { id, count: 0 };
    root.avatarSlot = h('div', { class: 'avatar-slot' });
    root.head = h('div', { class: 'msg-head' });
    root.content = h('div', { class: 'msg-content' });
    root.status = h('div', { class: 'pending-status', hidden: true });
    root.replyButton = h('button', {
      class: 'link-button', type: 'button',
      onclick: () => setTarget(root),
    }, 'Reply in thread');
    root.summary = h('summary');
    root.posts = h('div', { class: 'thread-posts' });
    root.thread = h('details', { class: 'thread', open: true, hidden: true }, root.summary, root.posts);
    root.node = h('article', { class: 'msg', 'data-id': id },
      root.avatarSlot,
      h('div', { class: 'msg-main' },
        root.head, root.content, root.status,
        h('div', { class: 'msg-actions' }, root.replyButton),
        root.thread));
    state.roots.set(id, root);
    state.badges.set(id, root.head);
    dom.log.append(root.node);
    dom.empty.hidden = true;
    return root;
  }

  function fillRoot(root, p, placeholder) {
    const name = placeholder ? '' : authorName(p);
    root.node.className = `msg ${placeholder ? 'placeholder' : kindClass(p)}`;
    root.label = placeholder ? 'an earlier message' : `${name}: ${(p.text || '').slice(0, 80)}`;
    root.node.setAttribute('aria-label', placeholder ? 'Earlier message' : `${name}, ${p.text || ''}`.slice(0, 200));
    root.avatarSlot.replaceChildren(placeholder ? avatar('…') : avatar(name));
    const when = parseTime(p.createdAt);
    root.head.replaceChildren(...[
      placeholder ? h('span', { class: 'author placeholder-text' }, 'Earlier message') : h('span', { class: 'author' }, name),
      p.kind === 'KIND_NOTICE' ? h('span', { class: 'notice-label' }, 'Notice') : null,
      timeEl(when),
    ].filter(Boolean));
    root.content.replaceChildren(placeholder
      ? h('div', { class: 'body placeholder-text' }, 'This thread started before the loaded history.')
      : content(p));
    root.placeholder = placeholder;
    showBadge(root.id);
  }

  function rootFor(id, when) {
    let root = state.roots.get(id);
    if (!root) {
      // A reply whose first message is older than the replayed history, or
      // arrived first: hold its place until (if ever) the message shows up.
      root = newRoot(id, when);
      fillRoot(root, {}, true);
    }
    return root;
  }

  function countReply(root) {
    root.count++;
    root.thread.hidden = false;
    root.summary.textContent = `${root.count} ${root.count === 1 ? 'reply' : 'replies'}`;
  }

  function replyNode(p) {
    const name = authorName(p);
    const head = h('div', { class: 'reply-head' },
      avatar(name, true), h('span', { class: 'author' }, name),
      p.kind === 'KIND_NOTICE' ? h('span', { class: 'notice-label' }, 'Notice') : null,
      timeEl(parseTime(p.createdAt)));
    const node = h('div', { class: `reply ${kindClass(p)}`, 'data-id': p.id || null }, head, content(p));
    if (p.id) {
      state.badges.set(p.id, head);
      showBadge(p.id);
    }
    return node;
  }

  // progress edits one line per job in place instead of stacking.
  function progress(root, p, key) {
    const seq = Number(p.seq || 0);
    const line = state.progress.get(key);
    const node = replyNode(p);
    if (state.finished.has(key)) node.classList.add('done');
    node.setAttribute('aria-live', 'off'); // the result is announced, not every tick
    if (line) {
      if (seq < line.seq) return; // an older update delivered late
      line.node.replaceWith(node);
      line.node = node;
      line.seq = seq;
      return;
    }
    state.progress.set(key, { node, seq });
    root.posts.append(node);
    countReply(root);
  }

  // ---------- posts from the stream ----------

  function handlePost(p) {
    const thread = (p.conversation && p.conversation.thread) || '';
    if (p.reaction && p.replyTo) react(p.replyTo, p.reaction);
    const hasContent = (p.text && p.text.trim()) || (p.blocks && p.blocks.length) || (p.attachments && p.attachments.length);
    if (!hasContent) return; // a reaction-only post
    const when = parseTime(p.createdAt);
    const jobKey = p.jobId ? `${thread}|${p.jobId}` : '';

    if (!thread) {
      const id = p.id || `local-${++state.localSeq}`;
      const pend = state.pending.get(id);
      let root = state.roots.get(id);
      if (!root) root = newRoot(id, when);
      fillRoot(root, p, false);
      if (pend) settle(id);
      return;
    }

    const root = rootFor(thread, when);
    if (p.id && state.pending.has(p.id)) {
      // The echo of a thread reply typed here: replace the local copy.
      const pend = state.pending.get(p.id);
      const node = replyNode(p);
      pend.node.replaceWith(node);
      settle(p.id);
      return;
    }
    if (p.kind === 'KIND_PROGRESS' && jobKey) {
      progress(root, p, jobKey);
      return;
    }
    if (jobKey && (p.kind === 'KIND_RESULT' || p.kind === 'KIND_ERROR')) {
      state.finished.add(jobKey);
      state.progress.get(jobKey)?.node.classList.add('done');
    }
    root.posts.append(replyNode(p));
    countReply(root);
  }

  // ---------- scrolling ----------

  function nearBottom() {
    const l = dom.log;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
  }

  function scrollToBottom() {
    dom.log.scrollTop = dom.log.scrollHeight;
    dom.jump.hidden = true;
  }

  function keepAtBottom() {
    if (state.stick || !state.everSynced) scrollToBottom();
  }

  function afterUpdate() {
    if (state.stick || !state.synced) scrollToBottom();
    else dom.jump.hidden = false;
  }

  dom.log.addEventListener('scroll', () => {
    state.stick = nearBottom();
    if (state.stick) dom.jump.hidden = true;
  });
  dom.jump.addEventListener('click', () => {
    scrollToBottom();
    dom.input.focus();
  });

  // ---------- the event stream ----------

  function setConn(kind, text) {
    dom.conn.className = `conn conn-${kind}`;
    dom.conn.textContent = text;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    let url = `/api/stream?channel=${encodeURIComponent(state.channel)}`;
    if (state.lastSeq > 0) url += `&after=${state.lastSeq}`;
    const es = new EventSource(url);
    state.es = es;
    setConn('connecting', state.everSynced ? 'Reconnecting…' : 'Connecting…');
    es.onmessage = (e) => {
      if (es !== state.es) return;
      const seq = Number(e.lastEventId) || 0;
      // EventSource resumes with Last-Event-ID, and the server sends only
      // later posts; this guards against anything else replaying.
      if (seq && seq <= state.lastSeq) return;
      let post;
      try {
        post = JSON.parse(e.data);
      } catch {
        return;
      }
      if (seq) state.lastSeq = seq;
      handlePost(post);
      afterUpdate();
    };
    es.addEventListener('synced', () => {
      if (es !== state.es) return;
      const first = !state.everSynced;
      state.synced = true;
      state.everSynced = true;
      state.retryDelay = 1000;
      dom.log.setAttribute('aria-busy', 'false');
      dom.empty.hidden = state.roots.size > 0;
      setConn('live', 'Live');
      if (first) scrollToBottom();
    });
    es.onerror = () => {
      if (es !== state.es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The server answered with an error (NATS down, replica stopping):
        // EventSource gives up, so retry ourselves, resuming after the
        // last post seen.
        es.close();
        state.es = null;
        const wait = state.retryDelay;
        state.retryDelay = Math.min(state.retryDelay * 2, 30000);
        setConn('offline', `Offline — retrying in ${Math.round(wait / 1000)}s`);
        state.retryTimer = setTimeout(connect, wait);
      } else {
        setConn('connecting', 'Reconnecting…');
      }
    };
  }

  // ---------- channels ----------

  function allChannels() {
    const list = [...state.serverChannels];
    for (const c of [...state.opened, state.channel]) {
      if (c && !list.includes(c)) list.push(c);
    }
    return list;
  }

  function renderChannels() {
    dom.channelList.replaceChildren(...allChannels().map((c) =>
      h('li', null, h('button', {
        type: 'button',
        'aria-current': c === state.channel ? 'page' : null,
        onclick: () => { location.hash = c; },
      }, c))));
  }

  function openChannel(name) {
    if (!CHANNEL_RE.test(name)) return;
    if (state.es) state.es.close();
    state.es = null;
    clearTimeout(state.retryTimer);
    for (const u of state.blobs) URL.revokeObjectURL(u);
    Object.assign(state, {
      channel: name, blobs: [], lastSeq: 0, synced: false, everSynced: false, stick: true,
      retryDelay: 1000, lastDay: '',
    });
    for (const m of [state.roots, state.badges, state.reactions, state.progress, state.pending]) m.clear();
    state.finished.clear();
    clearTarget();
    dom.log.replaceChildren(dom.empty);
    dom.empty.hidden = true;
    dom.log.setAttribute('aria-busy', 'true');
    dom.jump.hidden = true;
    dom.channelName.textContent = name;
    document.title = `#${name} · switchboard`;
    dom.label.textContent = `Message #${name}`;
    dom.input.placeholder = `Message #${name} — try “help”`;
    renderChannels();
    connect();
  }

  function channelFromHash() {
    const c = decodeURIComponent(location.hash.replace(/^#/, ''));
    return CHANNEL_RE.test(c) ? c : '';
  }

  window.addEventListener('hashchange', () => {
    const c = channelFromHash();
    if (c && c !== state.channel) {
      openChannel(c);
      dom.input.focus();
    }
  });

  dom.openForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const c = dom.openInput.value.trim().toLowerCase().replace(/^#/, '');
    if (!CHANNEL_RE.test(c)) {
      dom.openError.textContent = 'Use lower-case letters, digits, - and _ (64 at most).';
      dom.openInput.setAttribute('aria-invalid', 'true');
      return;
    }
    dom.openError.textContent = '';
    dom.openInput.removeAttribute('aria-invalid');
    dom.openInput.value = '';
    if (!state.opened.includes(c) && !state.serverChannels.includes(c)) {
      state.opened.push(c);
      save(KEY_CHANNELS, state.opened);
    }
    location.hash = c;
    if (c === state.channel) dom.input.focus();
  });

  // ---------- who am I ----------

  function showUser() {
    dom.meName.textContent = state.user || '—';
    dom.changeName.hidden = state.trusted;
  }

  function askName() {
    if (state.trusted) return;
    dom.nameInput.value = state.user;
    dom.nameError.textContent = '';
    dom.nameCancel.hidden = !state.user;
    if (!dom.dialog.open) dom.dialog.showModal();
    dom.nameInput.focus();
  }

  dom.nameForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = dom.nameInput.value.trim();
    const problem = validUser(name);
    if (problem) {
      dom.nameError.textContent = problem;
      dom.nameInput.setAttribute('aria-invalid', 'true');
      return;
    }
    dom.nameInput.removeAttribute('aria-invalid');
    state.user = name;
    save(KEY_USER, name);
    showUser();
    dom.dialog.close();
    dom.input.focus();
  });
  dom.dialog.addEventListener('cancel', (e) => {
    if (!state.user) e.preventDefault(); // a name is needed before anything else
  });
  dom.nameCancel.addEventListener('click', () => {
    dom.dialog.close();
    dom.input.focus();
  });
  dom.changeName.addEventListener('click', askName);

  // ---------- threads ----------

  function setTarget(root) {
    state.target = { id: root.id, label: root.label || '' };
    dom.targetText.textContent = state.target.label;
    dom.target.hidden = false;
    dom.label.textContent = `Reply in thread to ${state.target.label}`;
    dom.input.focus();
  }

  function clearTarget() {
    state.target = null;
    dom.target.hidden = true;
    if (state.channel) dom.label.textContent = `Message #${state.channel}`;
  }

  dom.targetCancel.addEventListener('click', () => {
    clearTarget();
    dom.input.focus();
  });

  // ---------- sending ----------

  function showError(text) {
    dom.error.textContent = text;
  }

  function setStatus(id, text, retry) {
    const pend = state.pending.get(id);
    if (!pend) return;
    pend.status.hidden = false;
    pend.status.replaceChildren(text);
    if (retry) {
      pend.node.classList.add('failed');
      pend.status.append(h('button', {
        class: 'link-button', type: 'button',
        onclick: () => {
          pend.node.classList.remove('failed');
          setStatus(id, 'Sending…');
          deliver(pend.msg, 0);
        },
      }, 'Retry'));
    }
  }

  // showPending shows what was typed until the chat core's echo replaces it.
  function showPending(msg) {
    const p = { id: msg.id, author: { name: state.user }, text: msg.text, createdAt: new Date().toISOString(), kind: 'KIND_MESSAGE' };
    let node;
    let status;
    if (msg.thread) {
      const root = rootFor(msg.thread, new Date());
      node = replyNode(p);
      status = h('div', { class: 'pending-status' }, 'Sending…');
      node.append(status);
      root.posts.append(node);
      root.thread.open = true;
      countReply(root);
    } else {
      const root = newRoot(msg.id, new Date());
      fillRoot(root, p, false);
      node = root.node;
      status = root.status;
      status.hidden = false;
      status.textContent = 'Sending…';
    }
    node.classList.add('pending');
    state.pending.set(msg.id, { msg, node, status });
    state.stick = true;
    scrollToBottom();
  }

  function settle(id) {
    const pend = state.pending.get(id);
    if (!pend) return;
    state.pending.delete(id);
    const root = state.roots.get(id);
    if (root) {
      root.node.classList.remove('pending', 'failed');
      root.status.hidden = true;
      root.status.replaceChildren();
    }
  }

  async function deliver(msg, attempt) {
    let res;
    try {
      res = await fetch('/api/messages', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(msg),
        credentials: 'same-origin',
      });
    } catch {
      retryOrFail(msg, attempt, 'Network error');
      return;
    }
    let body = {};
    try {
      body = await res.json();
    } catch {
      // An error page from a proxy; the status says enough.
    }
    if (res.ok) {
      setStatus(msg.id, 'Sent');
      return;
    }
    const why = body.error || `HTTP ${res.status}`;
    if (res.status >= 500 || res.status === 429 || res.status === 408) {
      retryOrFail(msg, attempt, why);
      return;
    }
    // Refused as it stands: give the text back to fix.
    const pend = state.pending.get(msg.id);
    if (pend) {
      state.pending.delete(msg.id);
      pend.node.remove();
      const root = state.roots.get(msg.thread || msg.id);
      if (!msg.thread) {
        state.roots.delete(msg.id);
      } else if (root && --root.count === 0) {
        root.thread.hidden = true;
      } else if (root) {
        root.summary.textContent = `${root.count} ${root.count === 1 ? 'reply' : 'replies'}`;
      }
    }
    if (!dom.input.value) {
      dom.input.value = msg.text;
      autosize();
    }
    showError(`Not sent: ${why}`);
    dom.input.focus();
  }

  // retryOrFail retries with the same id, so the chat core recognises a
  // message it already has and never runs the command twice.
  function retryOrFail(msg, attempt, why) {
    if (!state.pending.has(msg.id)) return; // echoed meanwhile
    if (attempt < 4) {
      setStatus(msg.id, `${why} — retrying…`);
      setTimeout(() => deliver(msg, attempt + 1), 500 * 2 ** attempt);
      return;
    }
    setStatus(msg.id, `Not delivered (${why}).`, true);
  }

  function remember(text) {
    if (state.sent[state.sent.length - 1] !== text) state.sent.push(text);
    if (state.sent.length > MAX_SENT) state.sent.splice(0, state.sent.length - MAX_SENT);
    save(KEY_SENT, state.sent);
    state.recall = -1;
  }

  function submit() {
    const text = dom.input.value;
    if (!text.trim()) return;
    if (!state.user) {
      askName();
      return;
    }
    const n = byteLength(text);
    if (n > MAX_TEXT_BYTES) {
      showError(`That message is ${n} bytes; the limit is ${MAX_TEXT_BYTES}. Attach long output elsewhere and link it.`);
      return;
    }
    showError('');
    const msg = {
      channel: state.channel,
      thread: state.target ? state.target.id : '',
      id: newId(),
      user: state.user,
      text,
    };
    remember(text.trim());
    dom.input.value = '';
    autosize();
    showPending(msg);
    deliver(msg, 0);
  }

  function autosize() {
    dom.input.style.height = 'auto';
    dom.input.style.height = `${Math.min(dom.input.scrollHeight, 220)}px`;
  }

  function setInput(text) {
    dom.input.value = text;
    autosize();
    const end = text.length;
    dom.input.setSelectionRange(end, end);
  }

  dom.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  dom.input.addEventListener('input', () => {
    autosize();
    if (dom.error.textContent) showError('');
  });
  // sentOnEnter is set between the keydown of an Enter that sent the
  // message and its keyup. Some input paths (remote desktops, automation)
  // deliver the Enter's character separately from its keydown, and it must
  // not land as a stray newline in the emptied box.
  let sentOnEnter = false;
  dom.input.addEventListener('beforeinput', (e) => {
    if (sentOnEnter && (e.inputType === 'insertLineBreak' || e.inputType === 'insertParagraph')) e.preventDefault();
  });
  dom.input.addEventListener('keyup', (e) => {
    if (e.key === 'Enter') sentOnEnter = false;
  });
  dom.input.addEventListener('keydown', (e) => {
    if (e.isComposing) return;
    const plain = !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey;
    if (e.key === 'Enter' && plain) {
      e.preventDefault();
      sentOnEnter = true;
      submit();
      return;
    }
    const v = dom.input.value;
    const recalling = state.recall >= 0 && v === state.sent[state.recall];
    if (e.key === 'ArrowUp' && plain && state.sent.length && (v === '' || recalling)) {
      e.preventDefault();
      state.recall = recalling ? Math.max(0, state.recall - 1) : state.sent.length - 1;
      setInput(state.sent[state.recall]);
      return;
    }
    if (e.key === 'ArrowDown' && plain && recalling) {
      e.preventDefault();
      if (state.recall < state.sent.length - 1) {
        state.recall++;
        setInput(state.sent[state.recall]);
      } else {
        state.recall = -1;
        setInput('');
      }
      return;
    }
    if (e.key === 'Escape' && state.target) {
      e.preventDefault();
      clearTarget();
    }
  });

  // ---------- start ----------

  async function getJSON(url) {
    const res = await fetch(url, { credentials: 'same-origin' });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return res.json();
  }

  async function start() {
    state.user = load(KEY_USER);
    try {
      const me = await getJSON('/api/me');
      if (me.trusted) {
        state.user = me.user;
        state.trusted = true;
      }
    } catch {
      // Without /api/me the browser's own name is all there is.
    }
    showUser();
    try {
      const resp = await getJSON('/api/channels');
      state.serverChannels = (resp.channels || []).filter((c) => CHANNEL_RE.test(c));
    } catch {
      state.serverChannels = ['ops'];
    }
    openChannel(channelFromHash() || state.serverChannels[0] || state.opened[0] || 'ops');
    if (!state.user) askName();
    else dom.input.focus();
  }

  start();
})();
