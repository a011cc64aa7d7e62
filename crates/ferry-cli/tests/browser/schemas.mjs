// Loads the console's Schemas page in headless Chromium (signing in with the token), chooses a
// subject, diffs its first and last versions, saves a screenshot and prints what it saw as JSON.
// Usage: node schemas.mjs URL TOKEN SCREENSHOT SUBJECT
import { withPage, signIn } from './chromium.mjs';

const [url, token, screenshot, subject] = process.argv.slice(2);
await withPage(url, { width: 1280, height: 900 }, async (page, seen) => {
  if (await signIn(page, await page.goto(url + 'schemas'), token, seen)) {
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
  await page.locator('#diff span[data-kind=add]').first().waitFor({ timeout: 20000 });
  seen.ids = await page.locator('#ids').textContent();
  seen.added = await page.locator('#diff span[data-kind=add]').allTextContents();
  seen.removed = await page.locator('#diff span[data-kind=del]').allTextContents();
  await page.fill('#filter', 'no-such-subject');
  await page.waitForFunction(() => document.querySelectorAll('#subjects tbody tr').length === 0);
  seen.filtered = true;
  await page.screenshot({ path: screenshot, fullPage: true });
});
