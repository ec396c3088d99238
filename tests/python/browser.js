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
const readline = require('readline');
const { execFileSync } = require('child_process');
const { chromium } = require(path.join(__dirname, '..', 'browser', 'node_modules', 'playwright-core'));

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const fail = (text) => { emit({ event: 'error', text: String(text) }); process.exit(2); };
const watchdog = setTimeout(() => { emit({ event: 'error', text: 'browser.js timed out' }); process.exit(3); },
  Number(process.env.BROWSER_TIMEOUT_MS || 120000));

function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ['chromium', 'chromium-browser']) {
    try { return execFileSync('which', [name]).toString().trim(); } catch (_) { /* next */ }
  }
  fail('no chromium found: install it (apt-get install chromium) or set CHROMIUM');
}

async function consoleArgs(message) {
  // Each argument as the value it is (objects included), not as printed text.
  return Promise.all(message.args().map((a) => a.jsonValue().catch(() => String(a))));
}

async function main() {
  const browser = await chromium.launch({
    executablePath: chromiumPath(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
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

  let chain = Promise.resolve();
  let quitting = false;
  const quit = async () => {
    if (quitting) return;
    quitting = true;
    clearTimeout(watchdog);
    await chain.catch(() => {});
    await browser.close().catch(() => {});
    process.exit(0);
  };
  const input = readline.createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (!line.trim()) return;
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) { fail(`bad command ${line}`); }
    if (cmd.cmd === 'quit') { quit(); return; }
    // One command after another, so an eval never overtakes the open before it.
    chain = chain.then(async () => {
      const page = pages.get(cmd.id);
      if (cmd.cmd === 'open') await open(cmd);
      else if (!page) fail(`no page ${cmd.id}`);
      else if (cmd.cmd === 'eval') emit({ event: 'eval', id: cmd.id, value: await page.evaluate(cmd.js) });
      else fail(`unknown command ${line}`);
    }).catch(fail);
  });
  input.on('close', quit);
}

main().catch(fail);
