// What the browser drivers share (bridge.js here, tests/python/browser.js): events written as
// JSON lines, a watchdog, Debian's Chromium launched headless, and the loop that runs the
// commands read from stdin one after another.
'use strict';
const readline = require('readline');
const { execFileSync } = require('child_process');
const { chromium } = require('playwright-core');

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const fail = (text) => { emit({ event: 'error', text: String(text) }); process.exit(2); };

// Ends the process (exit 3) after the milliseconds in environment variable `variable`
// (default 120 s), in case its test never says quit.
function watchdog(name, variable) {
  return setTimeout(() => { emit({ event: 'error', text: `${name} timed out` }); process.exit(3); },
    Number(process.env[variable] || 120000));
}

function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ['chromium', 'chromium-browser']) {
    try { return execFileSync('which', [name]).toString().trim(); } catch (_) { /* next */ }
  }
  fail('no chromium found: install it (apt-get install chromium) or set CHROMIUM');
}

// Chromium, headless, with `extra` flags besides.
function launch(extra = []) {
  return chromium.launch({
    executablePath: chromiumPath(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extra],
  });
}

// Runs the commands of stdin, one after another (so a command never overtakes the open
// before it): "open" through `open(cmd)`, "quit" (or the end of input) through `stop()` after
// what runs, and any other through `run(cmd, page)` with the page of its id, which returns
// false for a command it does not know.
function serve({ browser, pages, open, run, stop = () => {}, timer }) {
  let chain = Promise.resolve();
  let quitting = false;
  const quit = async () => {
    if (quitting) return;
    quitting = true;
    clearTimeout(timer);
    await chain.catch(() => {});
    await browser.close().catch(() => {});
    stop();
    process.exit(0);
  };
  const input = readline.createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (!line.trim()) return;
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) { fail(`bad command ${line}`); }
    if (cmd.cmd === 'quit') { quit(); return; }
    chain = chain.then(async () => {
      const page = pages.get(cmd.id);
      if (cmd.cmd === 'open') await open(cmd);
      else if (!page) fail(`no page ${cmd.id}`);
      else if (!(await run(cmd, page))) fail(`unknown command ${line}`);
    }).catch(fail);
  });
  input.on('close', quit);
}

module.exports = { emit, fail, watchdog, launch, serve };
