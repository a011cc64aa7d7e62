// Loads the console's Schemas page in headless Chromium (signing in with the token), chooses a
// subject, diffs its first and last versions, saves a screenshot and prints what it saw as JSON.
// Usage: node schemas.mjs URL TOKEN SCREENSHOT SUBJECT
import { chromium } from 'playwright-core';

const [url, token, screenshot, subject] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const seen = { signin: false, errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', e => seen.errors.push(String(e)));
  page.on('request', r => { if (!r.url().startsWith(url)) seen.errors.push('external request: ' + r.url()); });
  const first = await page.goto(url + 'schemas');
  if (first.status() === 401) {
    seen.signin = true;
    await page.fill('#t', token);
    await page.click('button[type=submit]');
    await page.goto(url + 'schemas');
  }
  const row = page.locator(`#subjects tr[data-subject="${subject}"]`);
  await row.waitFor({ timeout: 20000 });
  seen.row = await row.locator('td').allTextContents();
  seen.subjects = await page.locator('#subjects tbody tr').evaluateAll(rs => rs.map(r => r.dataset.subject));
  await row.click();
  await page.locator('#diff span').first().waitFor({ timeout: 20000 });
  seen.level = await page.locator('#level').textContent();
  seen.levelFrom = await page.locator('#levelFrom').textContent();
  seen.versions = await page.locator('#from option').allTextContents();
  await page.selectOption('#from', seen.versions[0]);
  await page.waitForFunction(() => document.getElementById('ids').textContent.includes('→'));
  // The diff of the first against the last version.
  await page.waitForTimeout(300);
  seen.ids = await page.locator('#ids').textContent();
  seen.added = await page.locator('#diff span[data-kind=add]').allTextContents();
  seen.removed = await page.locator('#diff span[data-kind=del]').allTextContents();
  await page.fill('#filter', 'no-such-subject');
  await page.waitForFunction(() => document.querySelectorAll('#subjects tbody tr').length === 0);
  seen.filtered = true;
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  seen.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
process.exit(seen.errors.length ? 1 : 0);
