// Opens pages of a Django test server in headless Chromium for tests/python, over JSON lines:
//   stdin   {"cmd":"open","id":ID,"url":URL}   {"cmd":"eval","id":ID,"js":EXPRESSION}
//           {"cmd":"quit"}
//   stdout  {"event":"ready"}  {"event":"opened","id":ID,"status":HTTP_STATUS}
//           {"event":"console","id":ID,"args":[...]}    each console message's arguments
//           {"event":"pageerror","id":ID,"text":S}     {"event":"eval","id":ID,"value":V}
//           {"event":"error","text":S} (then exit 2)
// Chromium and playwright-core are those of tests/browser (scripts/test installs both). It
// exits on quit, on end of input, or after BROWSER_TIMEOUT_MS (default 120 s, exit 3).
'use strict';
const path = require('path');
const { emit, fail, watchdog, launch, serve } = require(path.join(__dirname, '..', 'browser', 'driver'));

const timer = watchdog('browser.js', 'BROWSER_TIMEOUT_MS');

async function consoleArgs(message) {
  // Each argument as the value it is (objects included), not as printed text.
  return Promise.all(message.args().map((a) => a.jsonValue().catch(() => String(a))));
}

async function main() {
  const browser = await launch();
  const pages = new Map();
  emit({ event: 'ready' });

  async function open({ id, url }) {
    // One context per page: each has its own cookies (its own Django session).
    const context = await browser.newContext();
    const page = await context.newPage();
    pages.set(id, page);
    page.on('console', (m) => consoleArgs(m).then((args) => emit({ event: 'console', id, args })));
    page.on('pageerror', (e) => emit({ event: 'pageerror', id, text: String(e) }));
    const response = await page.goto(url);
    emit({ event: 'opened', id, status: response ? response.status() : 0 });
  }

  serve({
    browser,
    pages,
    open,
    timer,
    run: async (cmd, page) => {
      if (cmd.cmd !== 'eval') return false;
      emit({ event: 'eval', id: cmd.id, value: await page.evaluate(cmd.js) });
      return true;
    },
  });
}

main().catch(fail);
