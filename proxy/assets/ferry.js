/* Ferry's status and device pages.  Plain browser JavaScript; the plot is
   uPlot (vendored, MIT, uPlot.LICENSE.txt).  Nothing is fetched but from
   the admin listener itself. */
"use strict";

/* The token the page was opened with (?token=...), passed on. */
function ferryToken() {
  var t = new URLSearchParams(location.search).get("token");
  return t ? "token=" + encodeURIComponent(t) : "";
}

function ferryUrl(path) {
  var t = ferryToken();
  return t ? path + (path.indexOf("?") < 0 ? "?" : "&") + t : path;
}

function el(tag, text, cls) {
  var e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function age(s) {
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(0) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function ferryStatusPage() {
  function row(cells, body) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      var td = el("td");
      if (c instanceof Node) td.appendChild(c);
      else { td.textContent = c; if (typeof c === "number") td.className = "num"; }
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  function render(st) {
    document.getElementById("version").textContent = st.version;
    document.getElementById("summary").textContent =
      "workers: " + (st.workers || "one per core") + " · connections: " +
      st.connections + " · devices: " + st.devices.length;
    var body = document.querySelector("#devices tbody");
    body.textContent = "";
    st.devices.forEach(function (d) {
      var a = el("a", d.uuid);
      a.href = ferryUrl("/devices/" + encodeURIComponent(d.uuid));
      row([a, d.producer ? d.producer.peer + " (" + d.producer.kind + ")" : "gone",
           d.producer ? d.producer.listener : "", d.keys.length,
           d.rate_hz, d.frames_in, d.consumers_tcp + " / " + d.consumers_websocket,
           d.dropped, age(d.age_s)], body);
      body.lastChild.dataset.uuid = d.uuid;
    });
    document.getElementById("nodevices").style.display =
      st.devices.length ? "none" : "";
    body = document.querySelector("#listeners tbody");
    body.textContent = "";
    st.listeners.forEach(function (l) {
      row([l.name, l.mode, l.addresses.join(", "), l.tls ? "yes" : "no",
           l.connections], body);
    });
  }
  function poll() {
    fetch(ferryUrl("/api/status"), {cache: "no-store"})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(render)
      .catch(function (e) {
        document.getElementById("summary").textContent = "error: " + e.message;
      })
      .finally(function () { setTimeout(poll, 1000); });
  }
  poll();
}

function ferryDevicePage() {
  var uuid = decodeURIComponent(location.pathname.replace(/^\/devices\//, ""));
  var WINDOW = 600;              /* points kept: 10 s at 60 Hz */
  var keys = [], shown = [], data = [[]], plot = null, latest = null;
  var frames = 0, rateFrames = 0, rateAt = performance.now(), rate = 0;
  var dirty = false, t0 = performance.now();
  window.ferryFrames = 0;        /* for tests: frames the page received */
  document.getElementById("uuid").textContent = uuid;
  document.getElementById("back").href = ferryUrl("/");
  document.title = "Ferry: " + uuid;

  function color(i) { return "hsl(" + ((i * 137.5) % 360) + ",65%,45%)"; }

  function makePlot() {
    var series = [{}];
    keys.forEach(function (k, i) {
      series.push({label: k, stroke: color(i), width: 1.5, show: shown[i],
                   points: {show: false}});
    });
    if (plot) plot.destroy();
    plot = new uPlot({
      width: Math.min(window.innerWidth - 40, 1100), height: 360,
      series: series, legend: {show: false},
      scales: {x: {time: false}},
      axes: [{label: "seconds"}, {}],
    }, data, document.getElementById("plot"));
  }

  function setShown(pred) {
    keys.forEach(function (k, i) {
      shown[i] = pred(k, i);
      var box = document.getElementById("key" + i);
      if (box) box.checked = shown[i];
      if (plot) plot.setSeries(i + 1, {show: shown[i]});
    });
  }

  function makeKeys() {
    var box = document.getElementById("keys");
    box.textContent = "";
    keys.forEach(function (k, i) {
      var label = el("label"), cb = el("input"), sw = el("span", "", "swatch");
      cb.type = "checkbox"; cb.id = "key" + i; cb.checked = shown[i];
      cb.onchange = function () { shown[i] = cb.checked; plot.setSeries(i + 1, {show: cb.checked}); };
      sw.style.background = color(i);
      label.appendChild(cb); label.appendChild(sw); label.appendChild(document.createTextNode(k));
      box.appendChild(label);
    });
    var latestBox = document.getElementById("latest");
    latestBox.textContent = "";
    keys.forEach(function (k, i) {
      var d = el("div"); d.appendChild(el("span", k));
      var v = el("span", "", "num"); v.id = "val" + i; d.appendChild(v);
      latestBox.appendChild(d);
    });
  }

  document.getElementById("all").onclick = function () {
    var f = document.getElementById("filter").value.toLowerCase();
    setShown(function (k) { return k.toLowerCase().indexOf(f) >= 0; });
  };
  document.getElementById("none").onclick = function () { setShown(function () { return false; }); };
  document.getElementById("first").onclick = function () { setShown(function (k, i) { return i < 8; }); };
  document.getElementById("filter").oninput = document.getElementById("all").onclick;

  function onFrame(buf) {
    var v = new DataView(buf), n = keys.length, t = (performance.now() - t0) / 1000;
    if (buf.byteLength !== 4 * n) return;
    data[0].push(t);
    for (var i = 0; i < n; i++) data[i + 1].push(v.getFloat32(4 * i, true));
    if (data[0].length > WINDOW) data.forEach(function (a) { a.splice(0, a.length - WINDOW); });
    latest = buf; frames++; window.ferryFrames = frames; dirty = true;
  }

  function draw() {
    var now = performance.now();
    if (now - rateAt >= 1000) {
      rate = (frames - rateFrames) * 1000 / (now - rateAt);
      rateFrames = frames; rateAt = now;
      document.getElementById("info").textContent = keys.length + " keys · " +
        rate.toFixed(1) + " frames/s · " + frames + " frames received";
    }
    if (dirty && plot) {
      plot.setData(data);
      var v = new DataView(latest);
      for (var i = 0; i < keys.length; i++)
        document.getElementById("val" + i).textContent = v.getFloat32(4 * i, true).toFixed(4);
      dirty = false;
    }
    requestAnimationFrame(draw);
  }

  function connect() {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(ferryUrl(proto + location.host + "/v1/consume/" +
                                    encodeURIComponent(uuid)));
    ws.binaryType = "arraybuffer";
    ws.onmessage = function (m) {
      if (typeof m.data === "string") {
        keys = JSON.parse(m.data).keys;
        shown = keys.map(function (k, i) { return i < 8; });
        data = [[]].concat(keys.map(function () { return []; }));
        makeKeys(); makePlot();
        return;
      }
      onFrame(m.data);
    };
    ws.onclose = function (e) {
      document.getElementById("info").textContent = "disconnected (" + e.code +
        (e.reason ? ": " + e.reason : "") + "); retrying…";
      setTimeout(connect, 2000);
    };
  }
  connect();
  requestAnimationFrame(draw);
}
