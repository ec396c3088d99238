// Drives the stock SockJS client (sockjs-client 1.6.1) in headless Chromium for the
// end-to-end tests, one page per session, over JSON lines:
//   stdout  {"event":"static","origin":"http://127.0.0.1:PORT"}   the page's origin (and
//           /sockjs.min.js, for servers' --sockjs-url), then per page:
//           {"event":"open","id":ID,"transport":NAME}
//           {"event":"message","id":ID,"data":DATA,"type":TYPE}  (TYPE: typeof DATA in the page)
//           {"event":"close","id":ID,"code":N,"reason":S}  {"event":"console","id":ID,"text":S}
//           {"event":"pageerror","id":ID,"text":S}  {"event":"error","text":S} (then exit 2)
//   stdin   {"cmd":"open","id":ID,"url":SOCKJS_URL,"transport":NAME[,"sameOrigin":true]}
//           {"cmd":"send","id":ID,"data":STRING}  {"cmd":"close","id":ID}  {"cmd":"quit"}
//           {"cmd":"open","id":ID,"url":SOCKJS_URL,"page":"pushnote.html","options":{...}}
//             a page with pushnote.js from the server (see pushnote.html for its events)
//           {"cmd":"eval","id":ID,"js":EXPRESSION}  evaluated in the page
//           {"cmd":"closePage","id":ID}  closes the page, as a user closes a tab
// Pages are served from the bridge's origin, another than the SockJS server's; with
// "sameOrigin" the page is served (by request interception) from the server's own origin, for
// transports the client offers only to same-origin pages (htmlfile).
// It exits on quit, on end of input, or after BRIDGE_TIMEOUT_MS (default 120 s, exit 3).
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const { emit, fail, watchdog, launch, serve } = require('./driver');

const timer = watchdog('bridge', 'BRIDGE_TIMEOUT_MS');

const files = {
  '/page.html': [path.join(__dirname, 'page.html'), 'text/html; charset=utf-8'],
  '/pushnote.html': [path.join(__dirname, 'pushnote.html'), 'text/html; charset=utf-8'],
  '/sockjs.min.js': [require.resolve('sockjs-client/dist/sockjs.min.js'), 'application/javascript'],
};

async function main() {
  const server = http.createServer((req, res) => {
    const file = files[req.url.split('?')[0]];
    if (!file) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Type': file[1] });
    fs.createReadStream(file[0]).pipe(res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;

  // Certificate errors are ignored: the proxy test's TLS certificate is one it made itself.
  const browser = await launch(['--ignore-certificate-errors']);
  const pages = new Map();
  emit({ event: 'static', origin });

  async function open({ id, url, transport, sameOrigin, page: file, options }) {
    const page = await browser.newPage();
    pages.set(id, page);
    page.on('console', (m) => emit({ event: 'console', id, text: m.text() }));
    page.on('pageerror', (e) => emit({ event: 'pageerror', id, text: String(e) }));
    await page.exposeFunction('report', (event) => emit({ ...event, id }));
    let pageOrigin = origin;
    if (sameOrigin) {
      pageOrigin = new URL(url).origin;
      for (const [name, [file, type]] of Object.entries(files)) {
        await page.route(`${pageOrigin}/__bridge${name}`,
          (route) => route.fulfill({ contentType: type, body: fs.readFileSync(file) }));
      }
      pageOrigin += '/__bridge';
    }
    if (file === 'pushnote.html') {
      await page.goto(`${pageOrigin}/pushnote.html`);
      await page.evaluate(([u, o]) => window.start(u, o), [url, options || {}]);
      return;
    }
    await page.goto(`${pageOrigin}/page.html`);
    await page.evaluate(([u, t]) => window.start(u, t), [url, transport]);
  }

  serve({
    browser,
    pages,
    open,
    timer,
    stop: () => server.close(),
    run: async (cmd, page) => {
      if (cmd.cmd === 'send') await page.evaluate((d) => window.sock.send(d), cmd.data);
      else if (cmd.cmd === 'close') await page.evaluate(() => window.sock.close());
      else if (cmd.cmd === 'eval') await page.evaluate(cmd.js);
      else if (cmd.cmd === 'closePage') { pages.delete(cmd.id); await page.close(); }
      else return false;
      return true;
    },
  });
}

main().catch(fail);
