// Baseline for `dstream route` as a process: the minimal hand-written loop a person would write
// (split on newlines, JSON.parse, stamp the destination, JSON.stringify, batch the writes), with no
// validation, no error policy and no name rules.
let carry = '';
const stamp = (line) => {
  const e = JSON.parse(line);
  if (e.type !== 'checkpoint') e.metadata.Destination = `${e.metadata.TableName}_cdc_events`;
  return `${JSON.stringify(e)}\n`;
};
let out = '';
const flush = () => {
  if (out.length > 0 && !process.stdout.write(out)) process.stdin.pause();
  out = '';
};
process.stdout.on('drain', () => process.stdin.resume());
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  const lines = (carry + chunk).split('\n');
  carry = lines.pop();
  for (const line of lines) if (line.length > 0) out += stamp(line);
  flush();
});
process.stdin.on('end', () => {
  if (carry.length > 0) out += stamp(carry);
  flush();
});
