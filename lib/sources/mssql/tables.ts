/** Table names as users write them: `Persons` (schema dbo), `sales.Orders`, `[odd name].[x.y]`. See envelope/table.ts. */
export {
  parseTable as parseTableRef,
  qualifiedName as tableKey,
  quoteName,
  type QualifiedTable as TableRef,
} from '../../envelope/table.js';
