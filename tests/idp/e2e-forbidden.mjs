// The 403 page in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core):
// sign in as a user the app refuses, check what the page says (its visible text, not pixels),
// save a screenshot, then use the page's button to sign out and sign in as another user.
// Env: GATE_URL (authgate's public URL), APP_PATH (the refused page), USER (who is refused),
// OTHER_USER (who signs in after), OTHER_SUB (the X-User-Id the app must then see), EXPECT (a
// JSON array of strings the page must show), SHOT (where to save the screenshot), CHROMIUM.
// Exits 0 when every check holds; prints what failed otherwise.
import { run, signIn } from './chromium.mjs';

const gate = process.env.GATE_URL;
const appPath = process.env.APP_PATH;
const expected = JSON.parse(process.env.EXPECT);
await run('forbidden page ok', async (browser, check) => {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  await page.goto(`${gate}${appPath}`);
  await signIn(page, gate, process.env.USER);
  const response = await page.reload();
  check(response.status() === 403, `status ${response.status()} at ${page.url()}`);
  check(page.url() === `${gate}${appPath}`, `landed on ${page.url()}`);
  const text = await page.locator('body').innerText();
  for (const want of expected) check(text.includes(want), `the page does not say ${JSON.stringify(want)}: ${text}`);
  const html = await page.content();
  check(!/eyJ[A-Za-z0-9_-]{10,}/.test(html), 'a token is on the page');
  await page.screenshot({ path: process.env.SHOT, fullPage: true });

  // the way out: sign out here and at the IdP, and sign in as someone else
  await Promise.all([page.waitForURL(/\/interaction\//, { timeout: 15000 }), page.click('#sign-out')]);
  await signIn(page, gate, process.env.OTHER_USER);
  await page.goto(`${gate}${appPath}`);
  const echo = JSON.parse(await page.locator('body').innerText());
  const seen = echo.headers.filter(([k]) => k.toLowerCase() === 'x-user-id').map(([, v]) => v);
  check(JSON.stringify(seen) === JSON.stringify([process.env.OTHER_SUB]), `after switching, x-user-id ${seen}`);
});
