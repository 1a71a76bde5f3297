// Sign-in through the provider chooser in a real headless Chromium (Debian's /usr/bin/chromium
// driven by playwright-core): a page of a route that accepts several providers shows the
// chooser; the user picks one, signs in at its form, lands back on the page as themselves.
// Env: GATE_URL, APP_PATH, CHOICE (the link text to pick), USER, USER_SUB (the X-User-Id the app
// must see), CHROMIUM. Exits 0 when every check holds; prints what failed otherwise.
import { run, signIn } from './chromium.mjs';

const gate = process.env.GATE_URL;
const appPath = process.env.APP_PATH;
await run('chooser ok', async (browser, check) => {
  const page = await (await browser.newContext()).newPage();
  const response = await page.goto(`${gate}${appPath}`);
  check(response.status() === 200, `chooser status ${response.status()}`);
  const text = await page.locator('body').innerText();
  check(text.includes('Choose how to sign in'), `no chooser: ${text}`);
  check(text.includes(process.env.CHOICE) && text.includes('default'), `the choices: ${text}`);
  await page.getByRole('link', { name: process.env.CHOICE }).click();
  await signIn(page, gate, process.env.USER);
  check(page.url() === `${gate}${appPath}`, `landed on ${page.url()}`);
  const echo = JSON.parse(await page.locator('body').innerText());
  const seen = echo.headers.filter(([k]) => k.toLowerCase() === 'x-user-id').map(([, v]) => v);
  check(JSON.stringify(seen) === JSON.stringify([process.env.USER_SUB]), `x-user-id ${seen}`);
  check(echo.path === appPath, `landed on ${echo.path}`);
});
