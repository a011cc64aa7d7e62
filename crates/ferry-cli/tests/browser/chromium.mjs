// What every console script shares: Debian's Chromium, headless (CHROMIUM overrides its path),
// a page that records script errors and any request leaving the console's origin, and one
// JSON line of what was seen (exit 1 if anything went wrong). `context`: more of the browser
// context's options (permissions).
import { chromium } from 'playwright-core';

export async function withPage(origin, viewport, visit, context = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  const seen = { signin: false, errors: [] };
  try {
    const page = await (await browser.newContext({ viewport, ...context })).newPage();
    page.on('pageerror', e => seen.errors.push(String(e)));
    page.on('request', r => { if (!r.url().startsWith(origin)) seen.errors.push('external request: ' + r.url()); });
    await visit(page, seen);
  } catch (e) {
    seen.errors.push(String(e));
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
  process.exit(seen.errors.length ? 1 : 0);
}

// Signs in on the token page if the console asks for it.
export async function signIn(page, response, token, seen) {
  if (response.status() === 401) {
    seen.signin = true;
    await page.fill('#t', token);
    await page.click('button[type=submit]');
    return true;
  }
  return false;
}
